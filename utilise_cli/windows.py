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

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import rasterio
from rasterio.io import DatasetReader
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from .errors import SceneError, first_line
from .scenes import Scene

# GDAL's block cache defaults to 5 % of RAM (1.2 GB on a 24 GB machine) and fills up with the blocks of the
# windows read and of every output being streamed. It must still hold a row of input blocks of every date, or
# each stripe decompresses them again (2048^2 x 10 dates, linear: 64 MB saved 110 MB of peak but cost 15 % more
# time). Set here, where reading starts, before GDAL sizes its cache; a user's own GDAL_CACHEMAX wins.
os.environ.setdefault("GDAL_CACHEMAX", "128")

Span = tuple[int, int]  # [start, stop) in pixels


def _window(rows: Span, cols: Span) -> Window:
    return Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])


class WindowReader:
    """Raw file values of windows of dated scenes (DN, mask values), read on ``threads`` threads.

    Date t is always read in share t % threads, through that share's own file handles: GDAL caches blocks per
    handle, so a file read through two handles would have its blocks decompressed twice. The stripes of a
    2048^2 x 10-date mosaic, 2-core CPU: 0.69-0.74 s wall and 1.2-1.35 s CPU time with a handle per thread,
    0.39-0.40 s wall and 0.7 s CPU time in shares (one thread: 0.7 s both)."""

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
        self._dtypes: tuple[np.dtype, np.dtype] = (np.dtype(np.uint16), np.dtype(np.uint8))  # set at the first read

    def read(self, rows: Span, cols: Span, mask_rows: Span, mask_cols: Span) -> tuple[np.ndarray, np.ndarray]:
        """Bands T x C x h x w of window (rows, cols) and masks T x h' x w' of window (mask_rows, mask_cols), in the
        files' data types (those of all dates in one, as numpy would stack them; a mask of kind none: zeros)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self._shares), thread_name_prefix="utilise-read")
            self._dtypes = self._common_dtypes()
        window, mask_window = _window(rows, cols), _window(mask_rows, mask_cols)
        # Each date is read straight into its place: no array per date, no stacking copy.
        bands = np.empty((len(self.scenes), len(self.scenes[0].bands), window.height, window.width), self._dtypes[0])
        masks = np.empty((len(self.scenes), mask_window.height, mask_window.width), self._dtypes[1])

        def read_share(g: int) -> None:
            with self._locks[g]:
                for t in self._shares[g]:
                    self._read_date(g, t, window, mask_window, bands[t], masks[t])

        list(self._pool.map(read_share, range(len(self._shares))))
        return bands, masks

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

    def _read_date(self, share: int, t: int, window: Window, mask_window: Window, bands: np.ndarray,
                   mask: np.ndarray) -> None:
        """Date t's bands into ``bands`` C x h x w (a file's bands in one read where they lie side by side in
        the scene's order) and its mask into ``mask``."""
        scene = self.scenes[t]
        order = [(ref.path, ref.index) for ref in scene.bands.values()]
        for path, indexes in self._files[t].items():
            places = [order.index((path, i)) for i in indexes]
            if places == list(range(places[0], places[0] + len(places))):
                self._read(share, path, indexes, window, bands[places[0]: places[-1] + 1])
            else:
                for place, index in zip(places, indexes):
                    self._read(share, path, [index], window, bands[place: place + 1])
        if scene.mask_kind == "none":
            mask[:] = 0
        else:
            self._read(share, scene.mask.path, scene.mask.index, mask_window, mask)

    def _read(self, share: int, path, indexes, window: Window, out: np.ndarray) -> None:
        try:
            self._dataset(share, path).read(indexes, window=window, out=out)
        except RasterioIOError as err:  # a header that opens, tiles that do not (cut off, damaged)
            cause = first_line(err.__cause__ or err, path, 120)
            raise SceneError(f"{path}: cannot read its pixels ({cause}); the file is damaged or incomplete: "
                             "export or download it again, or remove it") from None
