"""Keep the C heap from handing large freed blocks back to the kernel between forward passes.

Each forward pass allocates and frees feature maps of tens of MB. glibc serves blocks that large with
fresh ``mmap`` calls, so every pass pays for zeroing new pages (about 20 % of the CPU forward time on
128 x 128 chips). Raising the mmap and trim thresholds lets the process reuse its own freed memory; the
peak resident size does not grow, it just is not returned early. One heap arena for every thread: otherwise
each thread that allocates (the stripe reader, dask's and GDAL's threads) keeps a heap of its own at its own
peak, which cost a fill about 300 MB more at 1024^2 once the next stripe was read in a thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_done = False


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the kernel (glibc ``malloc_trim``; nothing elsewhere). Called once per
    chip row of a fill: between rows the stripe's arrays are freed, and without this their pages stay resident
    (about 50 MB at 1024^2), while the forward passes within a row still reuse their memory."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """glibc, or None (not Linux, or a C library without malloc_trim)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (musl has neither)
    except (OSError, AttributeError):
        return None
    return libc


def reuse_freed_memory() -> bool:
    """Tune glibc malloc once per process for the network's forward passes (Linux only): large blocks from the
    heap and kept there, one heap for every thread; returns whether it took effect."""
    global _done
    if _done:
        return True
    libc = _libc()
    if libc is None:  # not glibc (musl, ...): leave the allocator alone
        return False
    ok = (bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31))
          and one_heap())
    _done = ok
    return ok


def one_heap() -> bool:
    """One heap arena for every thread (glibc; Linux only), leaving the other settings alone; returns whether it
    took effect. A fill's threads (the cloud screen's, the stripe reader's) would otherwise each keep a heap at
    its own peak: 50-110 MB more at 1024^2-2048^2 with the screen on 2 threads. The large blocks stay in their
    own mappings, returned when freed: taking them from the heap too (reuse_freed_memory) let a long 8192^2
    linear fill's peak reach 1089 MB, against 1024 MB with this alone."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, 1))
