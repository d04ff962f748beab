"""Writing one Cloud-Optimized GeoTIFF per date, stripe by stripe, never leaving a finished-looking partial file.

Rows are streamed into a hidden tiled GeoTIFF (``.NAME.partial.tif``); when every row is written it is
copied to COG under another hidden name (by cog_writer; ZSTD outputs by GDAL's COG driver, which only copies
finished datasets) and renamed to its final name, so a file with the final name is always complete.
"""

from __future__ import annotations

import errno
import functools
import os
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

from .atomic import disk_full, staged
from .cog_writer import write_cog
from .cores import each_on_threads, work_threads
from .errors import OutputError, first_line
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
    compress: str = "deflate"  # of the COG (the partial file is ZSTD or DEFLATE, see partial_compression)
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

    def close(self) -> tuple[Path, Path, int, str, str]:
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
        return partial_name(self.path), self.path, 3 if self.dtype == "float32" else 2, self.resampling, self.compress

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
# sample: 18.2 against 18.5 MB) and those 20 copies took 0.47 instead of 0.58 s (2-core AMD EPYC). ZSTD at
# level 1: a 2048^2 4-band output of a mosaic that packs like real scenes copied in 0.38 instead of 0.69-0.73 s,
# 31.9 against 31.6 MB; readers need ZSTD (GDAL >= 2.3; geotiff.js only since version 3), hence not the default.
COG_LEVEL = 1  # DEFLATE's and ZSTD's
# GDAL's COG driver averages the overviews into a temporary file that it compresses with ZSTD at GDAL's default
# level (9), then copies them into the COG, compressed as asked. Uncompressed there (a GDAL configuration option
# its source calls a debugging aid; a GDAL that ignores it is only slower), the same COG (every level equal, pixel
# for pixel) came in 0.57 instead of 0.72 s (DEFLATE) and 0.27 instead of 0.40 s (ZSTD) for a 2048^2 4-band output
# of the realistic benchmark stack, for a temporary file of a third of the raw size (11 MB there).
COG_TEMPORARY = {"COG_TMP_COMPRESSION": "NONE"}


def copy_to_cog(partial: str | Path, path: str | Path, predictor: int, resampling: str, compress: str = "deflate"
                ) -> Path:
    """Copy a closed partial GeoTIFF to a COG (``compress`` deflate or zstd at COG_LEVEL, 512-px blocks, overviews
    by ``resampling``) under a hidden name, check that every tile of it lies within the file, rename it to ``path``
    and remove the partial file. DEFLATE is cog_writer's, 1.8 times as fast as GDAL's copy for the outputs and 1.3
    times for the flags; ZSTD GDAL's. A failed copy raises OSError ENOSPC where the disk is full, else OutputError."""
    partial, path = Path(partial), Path(path)
    with staged(path) as tmp:
        try:
            if compress == "deflate":
                write_cog(partial, tmp, predictor, resampling)
            else:
                with rasterio.Env(**COG_TEMPORARY):
                    rasterio.shutil.copy(partial, tmp, driver="COG", compress=compress.upper(),
                                         level=COG_LEVEL, predictor=predictor, blocksize=512,
                                         overview_resampling=resampling, BIGTIFF="IF_SAFER")
            problem = incomplete(tmp)
            if problem:
                raise OSError(errno.EIO, f"the copy came out incomplete: {problem}")
        except (OSError, rasterio.errors.RasterioError) as err:  # told apart while the hidden file takes the space
            text = getattr(err, "strerror", None) or first_line(err, tmp, 120)
            if disk_full(err, tmp.parent):
                raise OSError(errno.ENOSPC, f"No space left on device (copying {path.name} to a COG: {text})") from None
            raise OutputError(f"{path}: copying it to a COG failed ({text}); check the disk or file system it is "
                              "on, and rerun: the dates already finished are kept") from None
    partial.unlink(missing_ok=True)
    return path


def incomplete(path: str | Path) -> str:
    """Why the GeoTIFF at ``path`` is incomplete ('' when it is not): a header that does not open, or a tile of
    some band, at full size or in an overview, that is not written or ends beyond the end of the file (with the
    4 bytes that GDAL's COG layout repeats after each tile, where its header says so).

    A copy on a thread other than the main one can fail to write without GDAL's error reaching rasterio: on a
    full disk, 5 of 47 fills of the sample copying on 2 threads left a truncated COG under its final name (tmpfs
    of 1640-1800 kB). This check finds each wrong file kept from three of those fills (4 files: tiles beyond the
    end, or a header that does not open) and passes their complete ones."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        trailer = 4 if b"BLOCK_TRAILER=LAST_4_BYTES_REPEATED" in f.read(1024) else 0
    try:
        with rasterio.open(path) as src:
            for band in range(1, src.count + 1):
                rows, cols = src.block_shapes[band - 1]
                levels = [(None, src.height, src.width)] + [
                    (i, -(-src.height // f), -(-src.width // f)) for i, f in enumerate(src.overviews(band))]
                for level, height, width in levels:
                    for i in range(-(-height // rows)):
                        for j in range(-(-width // cols)):
                            offset = src.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=band, ovr=level)
                            length = src.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=band, ovr=level)
                            if not offset or not length or int(offset) + int(length) + trailer > size:
                                where = "full size" if level is None else f"overview {level + 1}"
                                return (f"band {band}, {where}, tile row {i} column {j}: "
                                        f"{offset or 'no'} + {length or 'no'} bytes in a {size}-byte file")
    except rasterio.errors.RasterioError as err:
        return first_line(err, path, 120)
    return ""


COPY_THREADS = 4  # at most: each copy holds its own buffers besides GDAL's shared block cache


def copy_threads(files: int) -> int:
    """How many threads copy ``files`` rasters to COGs: one per usable core (or the limit set), at most
    COPY_THREADS."""
    return work_threads(min(COPY_THREADS, files))


def finish_all(writers: Sequence[StripeWriter], threads: int = 1) -> list[Path]:
    """Close every writer and copy each to its COG, on ``threads`` threads (GDAL releases the GIL while it
    copies); the first failure is raised after the copies under way have ended (those that finished keep their
    final names, each checked by copy_to_cog)."""
    jobs = [writer.close() for writer in writers]
    return each_on_threads(lambda job: copy_to_cog(*job), jobs, threads, "utilise-cog")
