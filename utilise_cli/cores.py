"""How many CPU cores this process may use, and work shared out on that many threads."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_limit = 0  # set_threads; 0: every usable core


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS tells it, else all of them), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int) -> None:
    """Run this process's own work on threads (the cloud screen, decoding, writing, COG copies, STAC items) on at
    most ``threads`` threads each (0: every usable core), as torch.set_num_threads does for the network: a dask
    worker that shares the machine's cores with others sets its share."""
    global _limit
    _limit = max(0, threads)


def work_threads(most: int) -> int:
    """Threads for one pool of work: the limit set, else the usable cores; at most ``most``, at least 1."""
    return max(1, min(_limit or usable_cores(), most))


def each_on_threads(func: Callable[[T], R], items: Iterable[T], most: int, name: str) -> list[R]:
    """[func(item) for item in items], on work_threads(most) threads (one after another here when that is 1;
    numpy and GDAL release the GIL). After an error or Ctrl-C no further item starts; the first error is raised
    once the items under way have ended."""
    items = list(items)
    threads = work_threads(min(most, len(items)) or 1)
    if threads == 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(threads, thread_name_prefix=name) as pool:
        futures = [pool.submit(func, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise
