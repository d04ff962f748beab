"""utilise: cloud-free Sentinel-2 time series with the U-TILISE network.

The network names below are loaded on first use (PEP 562), so ``import utilise_cli`` and ``utilise --help``
do not import torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["NetworkConfig", "UTILISE", "__version__", "load_model", "save_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in ("NetworkConfig", "UTILISE", "load_model", "save_checkpoint"):
        from . import network

        return getattr(network, name)
    raise AttributeError(f"module 'utilise_cli' has no attribute {name!r}")
