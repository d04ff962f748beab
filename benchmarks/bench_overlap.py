"""Is there room beside the network's passes? Whether work done on another thread while the network runs (the next
chip row's reading, the last one's writing) would come for free on this CPU, or slow the network down.

Runs the shipped network on batches of 4 chips of 10 dates (the fill's batch) for --passes passes, alone and then
with one more thread compressing 2048 x 512-px blocks of 4 bands through GDAL (DEFLATE, as the fill's writes and
COG copies do), once at the lowest priority (nice 19: it gets only cycles the network leaves idle) and once at
normal priority. Prints the network's time in each case as a ratio to alone, and how much of one core the
compressing thread got, against its rate alone.

    python benchmarks/bench_overlap.py [--passes 12] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import warnings
from typing import Callable

import numpy as np
import rasterio
from rasterio.io import MemoryFile

from utilise_cli.fill import FillOptions
from utilise_cli.plan import load_predictor

BLOCK = (4, 512, 2048)  # bands x rows x columns compressed per write


def compress_forever(data: np.ndarray, stop: threading.Event, done: list[int], nice: int) -> None:
    """Write ``data`` to an in-memory DEFLATE GeoTIFF again and again until ``stop``; counts writes in done[0]."""
    if nice:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    bands, rows, cols = data.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        while not stop.is_set():
            with MemoryFile() as memory, memory.open(driver="GTiff", width=cols, height=rows, count=bands,
                                                     dtype="uint16", tiled=True, blockxsize=512, blockysize=512,
                                                     compress="deflate", zlevel=1, predictor=2) as dst:
                dst.write(data)
            done[0] += 1


def with_background(work: Callable[[], None], data: np.ndarray, nice: int | None) -> tuple[float, float]:
    """(seconds ``work()`` took, writes per second of a thread compressing ``data`` at ``nice`` meanwhile; none
    where ``nice`` is None)."""
    stop, done = threading.Event(), [0]
    thread = None if nice is None else threading.Thread(target=compress_forever, args=(data, stop, done, nice))
    if thread is not None:
        thread.start()
    start = time.perf_counter()
    work()
    took = time.perf_counter() - start
    stop.set()
    if thread is not None:
        thread.join()
    return took, done[0] / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=12, help="network passes per case (default 12)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    predictor = load_predictor(FillOptions(method="utilise"))[0]
    rng = np.random.default_rng(0)
    x = rng.random((4, 10, 4, 128, 128), np.float32) * np.float32(0.3)
    observed = rng.random((4, 10, 128, 128)) < 0.7
    days = np.arange(10, dtype=np.float32) * 20 + 10
    data = (rng.random(BLOCK) * 3000).astype(np.uint16)
    predictor(x, observed, days)  # warm-up

    def passes() -> None:
        for _ in range(args.passes):
            predictor(x, observed, days)

    alone, _ = with_background(passes, data, None)
    _, rate = with_background(lambda: time.sleep(5.0), data, 0)
    print(f"{args.passes} passes of 4 chips, precision {predictor.precision}; a compressing thread alone: "
          f"{rate:.1f} writes/s (one core)")
    print(f"{'case':40s} {'network s':>10s} {'vs alone':>9s} {'thread got':>11s}")
    print(f"{'network alone':40s} {alone:10.2f} {1:8.2f}x {'':>11s}")
    for label, nice in (("beside a thread at the lowest priority", 19), ("beside a thread at normal priority", 0)):
        took, got = with_background(passes, data, nice)
        print(f"{label:40s} {took:10.2f} {took / alone:8.2f}x {got / rate:8.2f} core")


if __name__ == "__main__":
    main()
