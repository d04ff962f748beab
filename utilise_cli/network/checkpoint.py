"""Reading and writing checkpoints.

Two formats are read:

* the authors' released format: a dict with ``model_state_dict`` (and ``epoch``, ``iter``, ...) whose
  parameter names are those of the original code (``in_conv.conv.conv.0.weight``, ...); the configuration
  is inferred from the weights' shapes;
* our own format: ``{"format": "utilise-cli", "format_version": 1, "config": {...}, "state_dict": {...},
  "metadata": {...}}`` with this package's parameter names, the network configuration and metadata
  (bands, reflectance scale, training data, metrics).

Both are loaded with ``weights_only=True`` onto the CPU first, so a file never runs code on load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..atomic import staged
from ..errors import CheckpointError
from .allocator import reuse_freed_memory
from .config import NetworkConfig
from .header import FORMAT_NAME, FORMAT_VERSION, checkpoint_file, identity, interpret
from .utilise import UTILISE


def read_checkpoint(path: str | os.PathLike) -> tuple[NetworkConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint file of either format -> (config, state dict with our names, metadata)."""
    path = checkpoint_file(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for a bad or truncated file
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint; pass a U-TILISE .pth file (released or from `utilise train`)"
        ) from None
    return interpret(raw, path, lambda value: isinstance(value, torch.Tensor))


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as torch understands it."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return device


def load_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> UTILISE:
    """Load a U-TILISE checkpoint (released or our own format) -> network in eval mode on ``device``."""
    config, state, metadata = read_checkpoint(checkpoint)
    broken = [name for name, tensor in state.items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise CheckpointError(f"{checkpoint}: weights hold NaN or Inf ({', '.join(broken[:3])}); the file is "
                              "damaged or training diverged: pass another checkpoint")
    model = UTILISE(config, metadata)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # the right names with the wrong shapes
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:120])
        raise CheckpointError(f"{checkpoint}: weights do not fit the network its configuration describes "
                              f"({first[:160]}); pass another checkpoint") from None
    if missing or unexpected:
        what = ", ".join([f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in unexpected[:3]])
        raise CheckpointError(f"{checkpoint}: weights do not fit the inferred network ({what})")
    for key, value in identity(checkpoint).items():
        model.metadata.setdefault(key, value)
    target = resolve_device(device)
    if target.type == "cpu":
        reuse_freed_memory()
    return model.to(target).eval()


def save_checkpoint(model: UTILISE, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` in our own format, atomically (temporary name, then rename)."""
    path = Path(path)
    meta = {k: v for k, v in {**model.metadata, **(metadata or {})}.items()
            if k not in ("checkpoint_sha256", "checkpoint_path")}
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": meta,
    }
    with staged(path) as tmp:
        torch.save(payload, tmp)
    return path
