"""How many CPU cores this process may use: the work shared out on threads is sized by it."""

from __future__ import annotations

import os

_limit = 0  # set_threads; 0: every usable core


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS tells it, else all of them), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int) -> None:
    """Run this process's own pools of threads (the cloud screen, decoding, writing, COG copies, STAC items) on at most
    ``threads`` threads each (0: every usable core), as torch.set_num_threads does for the network: a dask
    worker that shares the machine's cores with others sets its share."""
    global _limit
    _limit = max(0, threads)


def work_threads(most: int) -> int:
    """Threads for one pool of work: the limit set, else the usable cores; at most ``most``, at least 1."""
    return max(1, min(_limit or usable_cores(), most))
