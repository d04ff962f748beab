"""Writing one Cloud-Optimized GeoTIFF per date, stripe by stripe, never leaving a finished-looking partial file.

Rows are streamed into a hidden tiled GeoTIFF (``.NAME.partial.tif``); when every row is written it is
copied to COG (GDAL's COG driver only copies finished datasets) under another hidden name and renamed
to its final name, so a file with the final name is always complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine

from .atomic import staged
from rasterio.crs import CRS

UINT16_SCALE = 1e-4
# Flags sidecar values: observed (kept), filled where the given mask occludes (or its buffer), filled where
# only the cloud screen found cloud or shadow, never observed (no value).
FLAG_OBSERVED, FLAG_FILLED, FLAG_SCREENED, FLAG_NEVER_OBSERVED = 0, 1, 2, 255
FLAG_MEANING = "0 observed, 1 filled (masked), 2 filled (cloud screen), 255 never observed"


def partial_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial.tif")


def to_output_dtype(reflectance: np.ndarray, dtype: str) -> np.ndarray:
    """Reflectance (0..1, NaN = nodata) -> uint16 DN (x 10000, 0 = nodata, valid values >= 1) or float32 (NaN)."""
    if dtype == "float32":
        return reflectance.astype(np.float32)
    dn = np.clip(np.rint(np.nan_to_num(reflectance, nan=0.0) / UINT16_SCALE), 1, 65535).astype(np.uint16)
    dn[np.isnan(reflectance)] = 0
    return dn


@dataclass
class StripeWriter:
    """One output raster written in stripes of rows (of a column panel), then turned into a COG."""

    path: Path
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    descriptions: Sequence[str]
    tags: dict[str, str] = field(default_factory=dict)
    resampling: str = "average"
    resume: bool = False  # reopen the partial file an interrupted run left, and go on writing into it
    _dataset: rasterio.io.DatasetWriter | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.resume:
            self._dataset = rasterio.open(partial_name(self.path), "r+")
            return
        nodata = {"uint16": 0, "float32": float("nan"), "uint8": FLAG_NEVER_OBSERVED}[self.dtype]
        profile = dict(driver="GTiff", width=self.width, height=self.height, count=self.count, dtype=self.dtype,
                       crs=self.crs, transform=self.transform, nodata=nodata, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", predictor=3 if self.dtype == "float32" else 2,
                       BIGTIFF="IF_SAFER")
        self._dataset = rasterio.open(partial_name(self.path), "w", **profile)

    def write_rows(self, row0: int, data: np.ndarray, col0: int = 0) -> None:
        """data: count x rows x columns from (row0, col0), already in the output dtype."""
        assert self._dataset is not None
        window = rasterio.windows.Window(col0, row0, data.shape[-1], data.shape[-2])
        self._dataset.write(data, window=window)

    def finish(self) -> Path:
        """Close, convert to COG and rename into place."""
        assert self._dataset is not None
        ds = self._dataset
        for i, name in enumerate(self.descriptions, start=1):
            ds.set_band_description(i, name)
        if self.dtype == "uint16":
            ds.scales = [UINT16_SCALE] * self.count
            ds.offsets = [0.0] * self.count
        ds.update_tags(**self.tags)
        ds.close()
        self._dataset = None
        predictor = 3 if self.dtype == "float32" else 2
        with staged(self.path) as tmp:
            rasterio.shutil.copy(partial_name(self.path), tmp, driver="COG", compress="DEFLATE", predictor=predictor,
                                 blocksize=512, overview_resampling=self.resampling, BIGTIFF="IF_SAFER")
        partial_name(self.path).unlink(missing_ok=True)
        return self.path

    def suspend(self) -> None:
        """Close the partial file and keep it, so that a rerun can resume it (after an interruption)."""
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None

    def abort(self) -> None:
        """Drop the partial file (after an error or interruption)."""
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None
        partial_name(self.path).unlink(missing_ok=True)
