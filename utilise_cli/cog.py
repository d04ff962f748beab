"""Writing one Cloud-Optimized GeoTIFF per date, stripe by stripe, never leaving a finished-looking partial file.

Rows are streamed into a hidden tiled GeoTIFF (``.NAME.partial.tif``); when every row is written it is
copied to COG under another hidden name (by cog_writer; ZSTD outputs by GDAL's COG driver, which only copies
finished datasets) and renamed to its final name, so a file with the final name is always complete. Where the
rows come whole and in order (one column panel) a DEFLATE COG is built from them as they come instead, with no
partial file, and written under a hidden name in the same way.
"""

from __future__ import annotations

import errno
import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import rasterio
import rasterio.errors
import rasterio.io
import rasterio.shutil
from affine import Affine

from .atomic import disk_full, staged
from .cog_writer import CogBuilder, write_cog
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
    """One output raster written in stripes of rows (of a column panel), then turned into a COG.

    ``streamed``: the COG is built as the rows come (cog_writer.CogBuilder), with no partial file to write and
    read back (2048^2 x 10 dates, linear: 0.8 s of 7.5 s besides the interpolation saved, 2-core AMD EPYC): rows
    must then come whole and in order (one column panel); DEFLATE only (a ZSTD COG is GDAL's copy of a partial
    file). An interruption puts the rows built so far into a partial file, which a resumed run goes on with."""

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
    streamed: bool = False
    _dataset: rasterio.io.DatasetWriter | None = None
    _builder: CogBuilder | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.resume:
            self._dataset = rasterio.open(partial_name(self.path), "r+")
        elif self.streamed and self.compress == "deflate":
            self._builder = CogBuilder((self.height, self.width), self.count, np.dtype(self.dtype), self._predictor,
                                       self._nodata, self.resampling, self.path.parent)
        else:
            self._dataset = rasterio.open(partial_name(self.path), "w", **self._profile())

    @property
    def _predictor(self) -> int:
        return 3 if self.dtype == "float32" else 2

    @property
    def _nodata(self) -> float:
        return {"uint16": 0, "float32": float("nan"), "uint8": FLAG_NEVER_OBSERVED}[self.dtype]

    def _profile(self) -> dict:
        """The partial file's creation options."""
        # Tiles 32 rows high: rows come 96 at a time (chip 128, overlap 32), so most tiles are complete when
        # written. A 256-row tile stays unfinished for three chip rows, in GDAL's block cache (which the windows
        # being read share) or, evicted, written and read back. 4096^2 linear: 29.5 / 29.0 s with 256-row
        # tiles, 28.2 / 27.8 s with 32-row ones; 2048^2 peak 870 / 876 MB against 835 / 847 MB (2-core AMD EPYC).
        return dict(driver="GTiff", width=self.width, height=self.height, count=self.count, dtype=self.dtype,
                    crs=self.crs, transform=self.transform, nodata=self._nodata, tiled=True, blockxsize=256,
                    blockysize=PARTIAL_TILE_ROWS, predictor=self._predictor, BIGTIFF="IF_SAFER",
                    **partial_compression())

    def write_rows(self, row0: int, data: np.ndarray, col0: int = 0) -> None:
        """data: count x rows x columns from (row0, col0), already in the output dtype."""
        if self._builder is not None:
            if (row0, col0, data.shape[-1]) != (self._builder.rows, 0, self.width):
                raise ValueError(f"{self.path}: rows from {row0}, columns from {col0} ({data.shape[-1]} wide) for a "
                                 f"COG built from whole rows in order ({self._builder.rows} rows so far)")
            self._builder.push(data)
            return
        assert self._dataset is not None
        window = rasterio.windows.Window(col0, row0, data.shape[-1], data.shape[-2])
        self._dataset.write(data, window=window)

    def _describe(self, ds: rasterio.io.DatasetWriter) -> None:
        """Band names, the DN scale and the tags."""
        for i, name in enumerate(self.descriptions, start=1):
            ds.set_band_description(i, name)
        if self.dtype == "uint16":
            ds.scales = [UINT16_SCALE] * self.count
            ds.offsets = [0.0] * self.count
        ds.update_tags(**self.tags)

    def close(self) -> Callable[[], Path]:
        """Write the metadata (and close the partial file); returns what makes the COG (finish_all calls it)."""
        if self._builder is not None:
            return functools.partial(self._build, self._header())
        assert self._dataset is not None
        self._describe(self._dataset)
        self._dataset.close()
        self._dataset = None
        return functools.partial(copy_to_cog, partial_name(self.path), self.path, self._predictor, self.resampling,
                                 self.compress)

    def _header(self) -> bytes:
        """A GeoTIFF of one pixel with this raster's georeferencing and metadata, as GDAL writes them: the COG's
        tags are copied from it."""
        with warnings.catch_warnings(), rasterio.io.MemoryFile() as memory:
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with memory.open(driver="GTiff", width=1, height=1, count=self.count, dtype=self.dtype, crs=self.crs,
                             transform=self.transform, nodata=self._nodata) as ds:
                self._describe(ds)
            return memory.read()

    def _build(self, header: bytes) -> Path:
        assert self._builder is not None
        path = finish_cog(self.path, functools.partial(self._builder.write, header))
        self._builder.close()
        self._builder = None
        return path

    def suspend(self) -> None:
        """Close the partial file and keep it, so that a rerun can resume it (after an interruption); a COG being
        built puts its rows into a partial file first."""
        if self._builder is not None:
            builder, self._builder = self._builder, None
            try:
                self._dataset = rasterio.open(partial_name(self.path), "w", **self._profile())
                row = 0
                for rows in builder.rows_back():
                    self.write_rows(row, rows)
                    row += rows.shape[1]
            finally:
                builder.close()
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None

    def abort(self) -> None:
        """Drop the partial file or the COG being built (after an error or interruption)."""
        if self._builder is not None:
            self._builder.close()
            self._builder = None
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
    by ``resampling``) with finish_cog, and remove the partial file. DEFLATE is cog_writer's, 1.8 times as fast as
    GDAL's copy for the outputs and 1.3 times for the flags; ZSTD GDAL's."""
    partial = Path(partial)

    def copy(tmp: Path) -> None:
        if compress == "deflate":
            write_cog(partial, tmp, predictor, resampling)
        else:
            with rasterio.Env(**COG_TEMPORARY):
                rasterio.shutil.copy(partial, tmp, driver="COG", compress=compress.upper(), level=COG_LEVEL,
                                     predictor=predictor, blocksize=512, overview_resampling=resampling,
                                     BIGTIFF="IF_SAFER")

    done = finish_cog(path, copy)
    partial.unlink(missing_ok=True)
    return done


def finish_cog(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Have ``write`` write a COG under a hidden name, check that every tile of it lies within the file, and rename
    it to ``path``. A failure raises OSError ENOSPC where the disk is full, else OutputError."""
    path = Path(path)
    with staged(path) as tmp:
        try:
            write(tmp)
            problem = incomplete(tmp)
            if problem:
                raise OSError(errno.EIO, f"the copy came out incomplete: {problem}")
        except (OSError, rasterio.errors.RasterioError) as err:  # told apart while the hidden file takes the space
            text = getattr(err, "strerror", None) or first_line(err, tmp, 120)
            if disk_full(err, tmp.parent):
                raise OSError(errno.ENOSPC, f"No space left on device (copying {path.name} to a COG: {text})") from None
            raise OutputError(f"{path}: copying it to a COG failed ({text}); check the disk or file system it is "
                              "on, and rerun: the dates already finished are kept") from None
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
            # Each level's own size: not the raster's divided by the factor GDAL reports, which it rounds (a level
            # halved from 1025 rows has 512, not 1025 / 2 rounded up, and a second row of tiles that is not there).
            sizes = [src.shape]
            for i in range(len(src.overviews(1)) if src.count else 0):
                with rasterio.open(path, overview_level=i) as level:
                    sizes.append(level.shape)
            for band in range(1, src.count + 1):
                rows, cols = src.block_shapes[band - 1]
                levels = [(None, *sizes[0])] + [(i, *size) for i, size in enumerate(sizes[1:])]
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
    """Close every writer and make each COG, on ``threads`` threads (GDAL and ISA-L release the GIL); the first
    failure is raised after the COGs under way have ended (those that finished keep their final names, each
    checked by finish_cog)."""
    jobs = [writer.close() for writer in writers]
    return each_on_threads(lambda job: job(), jobs, threads, "utilise-cog")
