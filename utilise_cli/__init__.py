"""utilise: cloud-free Sentinel-2 time series with the U-TILISE network."""

from __future__ import annotations

__version__ = "0.1.0"

from .network import NetworkConfig, UTILISE, load_model, save_checkpoint  # noqa: E402

__all__ = ["NetworkConfig", "UTILISE", "__version__", "load_model", "save_checkpoint"]
