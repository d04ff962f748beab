"""Windows of the scenes read straight from their files with rasterio: the fast path of ``cube.read_classes``
for scenes that already lie on the cube's grid (no ``--align`` reprojection).

Through dask a window costs a task per band, date and row chunk (about 300 for a 2048-px stripe of 10 dates),
and a pixel-interleaved tile is decompressed once per band that reads it. Here the bands that share a file
come in one read, and the dates are read on a small pool of threads (GDAL releases the GIL) that keep their
files open between windows. That stripe, with decoding and the cloud screen: 0.32 s instead of 0.46 s, and
0.32 s instead of 0.71 s in an 8192-px-wide raster, where dask's row chunks span the width
(``benchmarks/bench_read.py``).
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
    """Raw file values of windows of dated scenes (DN, mask values), read on ``threads`` threads."""

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
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()

    def read(self, rows: Span, cols: Span, mask_rows: Span, mask_cols: Span) -> tuple[np.ndarray, np.ndarray]:
        """Bands T x C x h x w of window (rows, cols) and masks T x h' x w' of window (mask_rows, mask_cols), in the
        files' data types (a mask of kind none: zeros, uint8)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="utilise-read")
        window = _window(rows, cols)
        dates = list(self._pool.map(lambda t: self._read_date(t, window, mask_rows, mask_cols), range(len(self.scenes))))
        return np.stack([d[0] for d in dates]), np.stack([d[1] for d in dates])

    def _dataset(self, path) -> DatasetReader:
        """This thread's handle of ``path`` (a handle is not shared between threads)."""
        handles = self._local.__dict__.setdefault("handles", {})
        if path not in handles:
            handles[path] = rasterio.open(path)
        return handles[path]

    def _read_date(self, t: int, window: Window, mask_rows: Span, mask_cols: Span) -> tuple[np.ndarray, np.ndarray]:
        scene = self.scenes[t]
        read = {path: dict(zip(indexes, self._read(path, indexes, window))) for path, indexes in self._files[t].items()}
        bands = np.stack([read[ref.path][ref.index] for ref in scene.bands.values()])
        if scene.mask_kind == "none":
            return bands, np.zeros((mask_rows[1] - mask_rows[0], mask_cols[1] - mask_cols[0]), np.uint8)
        return bands, self._read(scene.mask.path, scene.mask.index, _window(mask_rows, mask_cols))

    def _read(self, path, indexes, window: Window) -> np.ndarray:
        try:
            return self._dataset(path).read(indexes, window=window)
        except RasterioIOError as err:  # a header that opens, tiles that do not (cut off, damaged)
            cause = str(err.__cause__ or err).splitlines()[0][:120]
            raise SceneError(f"{path}: cannot read its pixels ({cause}); the file is damaged or incomplete: "
                             "export or download it again, or remove it") from None
