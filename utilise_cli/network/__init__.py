"""The U-TILISE network and its checkpoints.

The names below are loaded on first use (PEP 562): :mod:`utilise_cli.network.header`, which reads what a
checkpoint says without torch, can then be imported without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"one_heap": "allocator", "release_freed_memory": "allocator", "reuse_freed_memory": "allocator",
          "load_model": "checkpoint", "read_checkpoint": "checkpoint", "resolve_device": "checkpoint",
          "save_checkpoint": "checkpoint", "NetworkConfig": "config", "UTILISE": "utilise"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
