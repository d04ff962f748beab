"""Writing one Cloud-Optimized GeoTIFF per date, stripe by stripe, never leaving a finished-looking partial file.

Rows are streamed into a hidden tiled GeoTIFF (``.NAME.partial.tif``); when every row is written it is
copied to COG (GDAL's COG driver only copies finished datasets) under another hidden name and renamed
to its final name, so a file with the final name is always complete.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
import rasterio.errors
import rasterio.io
import rasterio.shutil
from affine import Affine

from .atomic import staged
from .cores import usable_cores
from rasterio.crs import CRS

UINT16_SCALE = 1e-4
# Flags sidecar values: observed (kept), filled where the given mask occludes (or its buffer), filled where
# only the cloud screen found cloud or shadow, never observed (no value).
FLAG_OBSERVED, FLAG_FILLED, FLAG_SCREENED, FLAG_NEVER_OBSERVED = 0, 1, 2, 255
FLAG_MEANING = "0 observed, 1 filled (masked), 2 filled (cloud screen), 255 never observed"


PARTIAL_TILE_ROWS = 32  # tile height of the partial files (see StripeWriter)


def partial_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial.tif")


@functools.lru_cache(maxsize=1)
def partial_compression() -> dict[str, str | int]:
    """Compression of the partial files: ZSTD at level 1 where this GDAL has the codec, else DEFLATE. They are
    read once, by the COG copy, which compresses again: a fast codec saves time on both sides (2048^2 x 10
    dates, linear, 2-core CPU: 10.2 -> 8.5 s) and on the sample its files were smaller than DEFLATE's."""
    try:
        with warnings.catch_warnings(), rasterio.io.MemoryFile() as memory:
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with memory.open(driver="GTiff", width=16, height=16, count=1, dtype="uint8", compress="zstd"):
                pass
    except rasterio.errors.RasterioError:
        return {"compress": "deflate"}
    return {"compress": "zstd", "zstd_level": 1}


def to_output_dtype(reflectance: np.ndarray, dtype: str) -> np.ndarray:
    """Reflectance (0..1, NaN = nodata) -> uint16 DN (x 10000, 0 = nodata, valid values >= 1) or float32 (NaN)."""
    if dtype == "float32":
        return reflectance.astype(np.float32)
    dn = np.divide(reflectance, UINT16_SCALE)  # NaN stays NaN through rint and clip
    np.rint(dn, out=dn)
    np.clip(dn, 1, 65535, out=dn)
    np.copyto(dn, 0, where=np.isnan(dn))
    return dn.astype(np.uint16)


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
        # Tiles 32 rows high: rows come 96 at a time (chip 128, overlap 32), so most tiles are complete when
        # written. A 256-row tile stays unfinished for three chip rows, in GDAL's block cache (which the windows
        # being read share) or, evicted, written and read back. 4096^2 linear: 29.5 / 29.0 s with 256-row
        # tiles, 28.2 / 27.8 s with 32-row ones; 2048^2 peak 870 / 876 MB against 835 / 847 MB (2-core AMD EPYC).
        profile = dict(driver="GTiff", width=self.width, height=self.height, count=self.count, dtype=self.dtype,
                       crs=self.crs, transform=self.transform, nodata=nodata, tiled=True, blockxsize=256,
                       blockysize=PARTIAL_TILE_ROWS, predictor=3 if self.dtype == "float32" else 2,
                       BIGTIFF="IF_SAFER", **partial_compression())
        self._dataset = rasterio.open(partial_name(self.path), "w", **profile)

    def write_rows(self, row0: int, data: np.ndarray, col0: int = 0) -> None:
        """data: count x rows x columns from (row0, col0), already in the output dtype."""
        assert self._dataset is not None
        window = rasterio.windows.Window(col0, row0, data.shape[-1], data.shape[-2])
        self._dataset.write(data, window=window)

    def close(self) -> tuple[Path, Path, int, str]:
        """Write the metadata and close the partial file; returns copy_to_cog's arguments (finish_all makes the
        COG)."""
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
        return partial_name(self.path), self.path, 3 if self.dtype == "float32" else 2, self.resampling

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


# DEFLATE level 1 instead of GDAL's 6: with the predictor the files came out smaller (B2, B3, B4, B8 of the 12
# Portugal and HU/RO training scenes: 1.50 against 1.55 MB; the 20 outputs of a 1024^2 x 10-date mosaic of the
# sample: 18.2 against 18.5 MB) and those 20 copies took 0.47 instead of 0.58 s (2-core AMD EPYC).
COG_DEFLATE_LEVEL = 1


def copy_to_cog(partial: str | Path, path: str | Path, predictor: int, resampling: str) -> Path:
    """Copy a closed partial GeoTIFF to a COG (DEFLATE level COG_DEFLATE_LEVEL, 512-px blocks, overviews by
    ``resampling``) under a hidden name, rename it to ``path`` and remove the partial file."""
    partial, path = Path(partial), Path(path)
    with staged(path) as tmp:
        rasterio.shutil.copy(partial, tmp, driver="COG", compress="DEFLATE", level=COG_DEFLATE_LEVEL,
                             predictor=predictor, blocksize=512, overview_resampling=resampling, BIGTIFF="IF_SAFER")
    partial.unlink(missing_ok=True)
    return path


# Rasters from this size up have their COG copies made in worker processes, one per core (2048^2 x 10 dates of
# the sample's mosaic, 2 cores: the copies took 2.9 of a 13.0 s linear fill in this process). Not threads: on
# Python threads and with GDAL's own NUM_THREADS, a full disk went unreported and a truncated COG got its final
# name; in a process of its own each copy runs in that process's main thread, where GDAL's errors are raised.
# Fresh interpreters rather than multiprocessing: a spawned process re-runs the caller's main script, which a
# notebook, `python -` or a script without a main guard cannot stand.
PARALLEL_COPY_PIXELS = 2048 * 2048
_COPY_SCRIPT = ("import json, sys\n"
                "from utilise_cli.cog import copy_to_cog\n"
                "for job in json.loads(sys.argv[1]):\n"
                "    copy_to_cog(*job)\n")


def copy_processes(pixels: int, files: int) -> int:
    """How many processes copy ``files`` rasters of ``pixels`` each to COGs: 1 (this one) for rasters under
    PARALLEL_COPY_PIXELS or on one core, else one per core."""
    if pixels < PARALLEL_COPY_PIXELS or not sys.executable:
        return 1
    return max(1, min(usable_cores(), files))


def finish_all(writers: Sequence[StripeWriter], processes: int = 1) -> list[Path]:
    """Close every writer and copy each to its COG, here or (``processes`` > 1) shared out among that many Python
    processes; after all have ended, the first failure is raised as OSError with the copy's own message (the
    copies that finished keep their final names)."""
    jobs = [writer.close() for writer in writers]
    if processes <= 1:
        return [copy_to_cog(*job) for job in jobs]
    # Dealt out in turn, the biggest (most bands) first, so that each process gets a like share of the work.
    ordered = [job for _, job in sorted(zip((-w.count for w in writers), jobs), key=lambda pair: pair[0])]
    shares = [ordered[i::processes] for i in range(processes)]
    # The children get this process's import path: it may have found the package where they would not.
    children = [subprocess.Popen([sys.executable, "-c", _COPY_SCRIPT,
                                  json.dumps([[str(partial), str(path), predictor, resampling]
                                              for partial, path, predictor, resampling in share])],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))})
                for share in shares if share]
    failures = []
    try:
        for child in children:
            _, errors = child.communicate()
            if child.returncode:
                failures.append(errors.strip() or f"exit status {child.returncode}")
    finally:
        for child in children:  # interrupted here: the copies stop too, each removing its hidden file
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
    if failures:
        last = failures[0].splitlines()[-1]
        # GDAL says what went wrong in the messages before the exception, which often says only "IO error".
        if any("No space left on device" in text for text in failures):
            raise OSError(errno.ENOSPC, f"No space left on device (copying to a COG: {last})")
        raise OSError(f"copying to a COG failed: {last}")
    return [job[1] for job in jobs]
