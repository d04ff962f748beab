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

from .errors import SceneError
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

    def read(self, rows: Span, cols: Span, mask_rows: Span, mask_cols: Span) -> tuple[np.ndarray, np.ndarray]:
        """Bands T x C x h x w of window (rows, cols) and masks T x h' x w' of window (mask_rows, mask_cols), in the
        files' data types (a mask of kind none: zeros, uint8)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self._shares), thread_name_prefix="utilise-read")
        window = _window(rows, cols)

        def read_share(g: int) -> list[tuple[int, tuple[np.ndarray, np.ndarray]]]:
            with self._locks[g]:
                return [(t, self._read_date(g, t, window, mask_rows, mask_cols)) for t in self._shares[g]]

        dates = dict(pair for share in self._pool.map(read_share, range(len(self._shares))) for pair in share)
        return np.stack([dates[t][0] for t in range(len(self.scenes))]), \
            np.stack([dates[t][1] for t in range(len(self.scenes))])

    def _dataset(self, share: int, path) -> DatasetReader:
        """The handle of ``path`` in ``share`` (opened once, kept open between windows)."""
        handles = self._handles[share]
        if path not in handles:
            handles[path] = rasterio.open(path)
        return handles[path]

    def _read_date(self, share: int, t: int, window: Window, mask_rows: Span, mask_cols: Span
                   ) -> tuple[np.ndarray, np.ndarray]:
        scene = self.scenes[t]
        read = {path: dict(zip(indexes, self._read(share, path, indexes, window)))
                for path, indexes in self._files[t].items()}
        bands = np.stack([read[ref.path][ref.index] for ref in scene.bands.values()])
        if scene.mask_kind == "none":
            return bands, np.zeros((mask_rows[1] - mask_rows[0], mask_cols[1] - mask_cols[0]), np.uint8)
        return bands, self._read(share, scene.mask.path, scene.mask.index, _window(mask_rows, mask_cols))

    def _read(self, share: int, path, indexes, window: Window) -> np.ndarray:
        try:
            return self._dataset(share, path).read(indexes, window=window)
        except RasterioIOError as err:  # a header that opens, tiles that do not (cut off, damaged)
            cause = str(err.__cause__ or err).splitlines()[0][:120]
            raise SceneError(f"{path}: cannot read its pixels ({cause}); the file is damaged or incomplete: "
                             "export or download it again, or remove it") from None
