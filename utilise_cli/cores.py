"""How many CPU cores this process may use: the work shared out on threads or processes is sized by it."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS tells it, else all of them), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
