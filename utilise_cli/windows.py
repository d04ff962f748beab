"""Windows of the scenes read straight from their files with rasterio: the fast path of ``cube.read_classes``
for scenes that already lie on the cube's grid (no ``--align`` reprojection).

Through dask a window costs a task per band, date and row chunk (about 300 for a 2048-px stripe of 10 dates),
and a pixel-interleaved tile is decompressed once per band that reads it. Here the bands that share a file
come in one read, and the dates are read on a small pool of threads (GDAL releases the GIL), each date always
in the same share and through handles kept open between windows. That stripe, with decoding and the cloud
screen: 0.32 s instead of 0.46 s, and 0.32 s instead of 0.71 s in an 8192-px-wide raster, where dask's row
chunks span the width (``benchmarks/bench_read.py``).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import rasterio
import rasterio.env
from rasterio.io import DatasetReader
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from .errors import SceneError, first_line
from .scenes import Scene

log = logging.getLogger(__name__)

# GDAL's block cache defaults to 5 % of RAM (1.2 GB on a 24 GB machine) and fills up with the blocks of the
# windows read and of every output being streamed. Set here, where reading starts, before GDAL sizes its cache;
# a user's own GDAL_CACHEMAX wins. A reader raises the cap where one row of its files' blocks would not fit
# (WindowReader.hold_block_rows): 2048^2 x 10 dates, linear, 64 MB saved 110 MB of peak but cost 15 % more time.
CACHE_MB = 128
_USER_CACHE = "GDAL_CACHEMAX" in os.environ
os.environ.setdefault("GDAL_CACHEMAX", str(CACHE_MB))
_cache_bytes = CACHE_MB << 20  # GDAL's cap as this module last set it
CACHE_SPARE = 1.25  # the cap over one row of blocks: room for the outputs' blocks and the next row's first
SPLIT_BLOCK_ROWS = 128  # windows are read in pieces at the edges of blocks at least this high

Span = tuple[int, int]  # [start, stop) in pixels


def _window(rows: Span, cols: Span) -> Window:
    return Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])


def _rows_of(part: Span | None, span: Span) -> slice:
    """Where rows ``part`` of ``span`` lie in an array of its rows (nothing for None)."""
    return slice(part[0] - span[0], part[1] - span[0]) if part else slice(0, 0)


def _carry(last: tuple[Span, Span, np.ndarray] | None, window: tuple[Span, Span], out: np.ndarray) -> int:
    """Copy into ``out`` (... x h x w of ``window``: rows, columns) the rows that the ``last`` window read (rows,
    columns, array) shares with it, where ``window`` moves down the same columns; returns the first row still to
    read."""
    rows, cols = window
    if last is None or last[1] != cols or not last[0][0] <= rows[0] < last[0][1] <= rows[1]:
        return rows[0]
    last_rows, _, values = last
    out[..., : last_rows[1] - rows[0], :] = values[..., rows[0] - last_rows[0]:, :]
    return last_rows[1]


def _overlap(span: Span, piece: Span) -> Span | None:
    """The part of ``span`` inside ``piece``; None where they do not meet."""
    start, stop = max(span[0], piece[0]), min(span[1], piece[1])
    return (start, stop) if start < stop else None


class WindowReader:
    """Raw file values of windows of dated scenes (DN, mask values), read on ``threads`` threads.

    Date t is always read in share t % threads, through that share's own file handles: GDAL caches blocks per
    handle, so a file read through two handles would have its blocks decompressed twice. The stripes of a
    2048^2 x 10-date mosaic, 2-core CPU: 0.69-0.74 s wall and 1.2-1.35 s CPU time with a handle per thread,
    0.39-0.40 s wall and 0.7 s CPU time in shares (one thread: 0.7 s both).

    Consecutive windows share rows of blocks (a 512-px block row spans five 96-row chip rows), so each block is
    decompressed once only where GDAL's cache holds a row of blocks of every file: the cap is raised to that
    (hold_block_rows), and a window that reaches into the next row of blocks is read in pieces, every date's
    rows above the edge first. The cache then drops the finished row, least recently used, instead of the
    blocks the dates still to read need, which it would drop one date after the other."""

    def __init__(self, scenes: Sequence[Scene], threads: int = 2) -> None:
        self.scenes = list(scenes)
        self.threads = threads
        # per scene: file -> the band indexes read from it, in the scene's band order
        self._files: list[dict] = []
        for scene in self.scenes:
            files: dict = {}
            for ref in scene.bands.values():
                files.setdefault(ref.path, []).append(ref.index)
            self._files.append(files)
        shares = max(1, min(threads, len(self.scenes)))
        self._shares = [range(g, len(self.scenes), shares) for g in range(shares)]
        self._handles: list[dict] = [{} for _ in self._shares]  # share -> path -> open dataset
        self._locks = [threading.Lock() for _ in self._shares]  # a handle is never used by two threads at once
        self._pool: ThreadPoolExecutor | None = None
        self._heights: set[int] = set()  # the files' block heights (set at the first read)
        self._bottom = 0  # the raster's height (set at the first read)
        self._held: Span = (0, 0)  # the columns whose row of blocks the cache was last sized for
        self._last: tuple = (None, None)  # (rows, cols, array) of the bands and of the masks last read
        self._dtypes: tuple[np.dtype, np.dtype] = (np.dtype(np.uint16), np.dtype(np.uint8))  # set at the first read

    def read(self, rows: Span, cols: Span, mask_rows: Span, mask_cols: Span) -> tuple[np.ndarray, np.ndarray]:
        """Bands T x C x h x w of window (rows, cols) and masks T x h' x w' of window (mask_rows, mask_cols), in the
        files' data types (those of all dates in one, as numpy would stack them; a mask of kind none: zeros).

        The arrays are kept until the next read, which takes the rows it shares with them from there (so do not
        write into them), unless they reach the raster's last row, where no window further down can follow."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self._shares), thread_name_prefix="utilise-read")
            self._dtypes = self._common_dtypes()
            self._heights = {self._dataset(t % len(self._shares), path).block_shapes[0][0]
                             for t in range(len(self.scenes)) for path in self._paths(t)}
            self._bottom = self._dataset(0, next(iter(self._files[0]))).height
        span = (min(cols[0], mask_cols[0]), max(cols[1], mask_cols[1]))
        if span != self._held:  # a panel's windows all span the same columns
            self.hold_block_rows(span)
            self._held = span
        # Each date is read straight into its place: no array per date, no stacking copy.
        bands = np.empty((len(self.scenes), len(self.scenes[0].bands), rows[1] - rows[0], cols[1] - cols[0]),
                         self._dtypes[0])
        masks = np.empty((len(self.scenes), mask_rows[1] - mask_rows[0], mask_cols[1] - mask_cols[0]),
                         self._dtypes[1])
        band_from = _carry(self._last[0], (rows, cols), bands)
        mask_from = _carry(self._last[1], (mask_rows, mask_cols), masks)
        for piece in self._pieces(min(band_from, mask_from), max(rows[1], mask_rows[1])):
            band_rows, mask_part = _overlap((band_from, rows[1]), piece), _overlap((mask_from, mask_rows[1]), piece)

            def read_share(g: int) -> None:
                with self._locks[g]:
                    for t in self._shares[g]:
                        self._read_date(g, t, band_rows, cols, mask_part, mask_cols,
                                        bands[t][:, _rows_of(band_rows, rows)], masks[t][_rows_of(mask_part, mask_rows)])

            list(self._pool.map(read_share, range(len(self._shares))))  # a piece on every share before the next
        self._last = ((rows, cols, bands) if rows[1] < self._bottom else None,
                      (mask_rows, mask_cols, masks) if mask_rows[1] < self._bottom else None)
        return bands, masks

    def _pieces(self, start: int, stop: int) -> list[Span]:
        """Rows [start, stop) cut at the edges of the files' blocks at least SPLIT_BLOCK_ROWS high."""
        edges = {edge for height in self._heights if height >= SPLIT_BLOCK_ROWS
                 for edge in range((start // height + 1) * height, stop, height)}
        cuts = [start, *sorted(edges), stop]
        return list(zip(cuts[:-1], cuts[1:]))

    def _paths(self, t: int) -> list:
        """The files date t reads: its bands' and its mask's (none for a mask of kind none)."""
        scene = self.scenes[t]
        return list(dict.fromkeys([*self._files[t], *([] if scene.mask_kind == "none" else [scene.mask.path])]))

    def block_row_bytes(self, cols: Span) -> int:
        """Bytes of one row of blocks of every file, over the blocks that columns [cols) touch: what GDAL's cache
        must hold for consecutive windows to decompress each block once (all bands of a file: a pixel-interleaved
        block holds them all)."""
        total = 0
        for t in range(len(self.scenes)):
            for path in self._paths(t):
                ds = self._dataset(t % len(self._shares), path)
                height, width = ds.block_shapes[0]
                blocks = (cols[1] - 1) // width - cols[0] // width + 1
                total += height * width * blocks * sum(np.dtype(d).itemsize for d in ds.dtypes)
        return total

    def striped(self) -> str:
        """A file stored in strips (blocks as wide as the raster), '' when there is none: each column panel then
        decompresses its whole rows again."""
        return next((str(path) for t in range(len(self.scenes)) for path in self._paths(t)
                     if (ds := self._dataset(t % len(self._shares), path)).block_shapes[0][1] >= ds.width > 1), "")

    def cache_wanted(self, cols: Span) -> int:
        """Bytes of GDAL's block cache that windows over columns [cols) want: CACHE_SPARE times a row of blocks."""
        return int(CACHE_SPARE * self.block_row_bytes(cols))

    def hold_block_rows(self, cols: Span) -> None:
        """Raise GDAL's block cache (never lower it) to what windows over columns [cols) want, unless the user set
        GDAL_CACHEMAX."""
        global _cache_bytes
        want = self.cache_wanted(cols)
        if _USER_CACHE or want <= _cache_bytes:
            return
        rasterio.env.set_gdal_config("GDAL_CACHEMAX", want)
        _cache_bytes = want
        log.debug("GDAL's block cache raised to %d MB: a row of the scenes' blocks", want >> 20)

    def _common_dtypes(self) -> tuple[np.dtype, np.dtype]:
        """The data type that holds every date's bands, and the one for the masks."""
        bands, masks = [], []
        for t, scene in enumerate(self.scenes):
            share = t % len(self._shares)
            for path, indexes in self._files[t].items():
                bands += [self._dataset(share, path).dtypes[i - 1] for i in indexes]
            masks.append(np.uint8 if scene.mask_kind == "none" else
                         self._dataset(share, scene.mask.path).dtypes[scene.mask.index - 1])
        return np.result_type(*bands), np.result_type(*masks)

    def _dataset(self, share: int, path) -> DatasetReader:
        """The handle of ``path`` in ``share`` (opened once, kept open between windows)."""
        handles = self._handles[share]
        if path not in handles:
            handles[path] = rasterio.open(path)
        return handles[path]

    def _read_date(self, share: int, t: int, rows: Span | None, cols: Span, mask_rows: Span | None, mask_cols: Span,
                   bands: np.ndarray, mask: np.ndarray) -> None:
        """Date t's bands over (rows, cols) into ``bands`` C x h x w (a file's bands in one read where they lie
        side by side in the scene's order) and its mask over (mask_rows, mask_cols) into ``mask``; None: no rows."""
        scene = self.scenes[t]
        if rows is not None:
            window = _window(rows, cols)
            order = [(ref.path, ref.index) for ref in scene.bands.values()]
            for path, indexes in self._files[t].items():
                places = [order.index((path, i)) for i in indexes]
                if places == list(range(places[0], places[0] + len(places))):
                    self._read(share, path, indexes, window, bands[places[0]: places[-1] + 1])
                else:
                    for place, index in zip(places, indexes):
                        self._read(share, path, [index], window, bands[place: place + 1])
        if mask_rows is None:
            return
        if scene.mask_kind == "none":
            mask[:] = 0
        else:
            self._read(share, scene.mask.path, scene.mask.index, _window(mask_rows, mask_cols), mask)

    def _read(self, share: int, path, indexes, window: Window, out: np.ndarray) -> None:
        try:
            self._dataset(share, path).read(indexes, window=window, out=out)
        except RasterioIOError as err:  # a header that opens, tiles that do not (cut off, damaged)
            cause = first_line(err.__cause__ or err, path, 120)
            raise SceneError(f"{path}: cannot read its pixels ({cause}); the file is damaged or incomplete: "
                             "export or download it again, or remove it") from None
