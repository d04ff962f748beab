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

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..atomic import staged
from ..errors import CheckpointError
from .allocator import reuse_freed_memory
from .config import NetworkConfig
from .utilise import UTILISE

FORMAT_NAME = "utilise-cli"
FORMAT_VERSION = 1

# Original parameter-name prefix -> ours. Applied in order; the first match wins.
_ORIGINAL_TO_OURS: list[tuple[str, str]] = [
    (r"^in_conv\.conv\.conv\.0\.", "stem.conv1."),
    (r"^in_conv\.conv\.conv\.2\.", "stem.conv2."),
    (r"^down_blocks\.(\d+)\.down\.conv\.0\.", r"encoder.\1.down."),
    (r"^down_blocks\.(\d+)\.conv1\.conv\.0\.", r"encoder.\1.conv1."),
    (r"^down_blocks\.(\d+)\.conv2\.conv\.0\.", r"encoder.\1.conv2."),
    (r"^temporal_encoder\.0\.attention_heads\.fc_q\.", "temporal.query."),
    (r"^temporal_encoder\.0\.attention_heads\.fc_k\.", "temporal.key."),
    (r"^temporal_encoder\.0\.norm1\.", "temporal.norm1."),
    (r"^temporal_encoder\.0\.norm2\.", "temporal.norm2."),
    (r"^temporal_encoder\.0\.mlp\.0\.", "temporal.mlp."),
    (r"^up_blocks\.(\d+)\.skip_conv\.conv\.conv\.0\.", r"decoder.\1.skip."),
    (r"^up_blocks\.(\d+)\.up\.convtrans\.0\.", r"decoder.\1.up."),
    (r"^up_blocks\.(\d+)\.conv1\.conv\.conv\.0\.", r"decoder.\1.conv1."),
    (r"^up_blocks\.(\d+)\.conv2\.conv\.conv\.0\.", r"decoder.\1.conv2."),
    (r"^out_conv\.conv\.conv\.0\.", "head.conv1."),
    (r"^out_conv\.conv\.conv\.2\.", "head.conv2."),
]


def rename_original_state_dict(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Map the original implementation's parameter names onto this package's module names."""
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        name = name.removeprefix("module.")  # saved from DataParallel
        for pattern, repl in _ORIGINAL_TO_OURS:
            new, n = re.subn(pattern, repl, name)
            if n:
                renamed[new] = tensor
                break
        else:
            raise CheckpointError(f"{source}: unknown parameter '{name}': not a U-TILISE checkpoint")
    return renamed


def infer_config(state: Mapping[str, torch.Tensor], source: str, n_head: int = 4) -> NetworkConfig:
    """Read the network configuration off the shapes of a state dict with our parameter names.

    The split of the query width into heads is not visible in the shapes; released models use 4 heads.
    """
    try:
        stem = state["stem.conv1.weight"]
        levels = 1 + len({k.split(".")[1] for k in state if k.startswith("encoder.")})
        encoder = [int(stem.shape[0])] + [
            int(state[f"encoder.{i}.conv1.weight"].shape[0]) for i in range(levels - 1)
        ]
        decoder = [0] * levels
        decoder[-1] = encoder[-1]
        for i in range(levels - 1):
            decoder[levels - 2 - i] = int(state[f"decoder.{i}.up.weight"].shape[1])
        qk = int(state["temporal.query.weight"].shape[0])
        output_dim = int(state["head.conv2.weight"].shape[0])
    except KeyError as err:
        raise CheckpointError(f"{source}: missing parameter {err}: not a complete U-TILISE checkpoint") from None
    if qk % n_head:
        raise CheckpointError(f"{source}: query width {qk} is not divisible by {n_head} heads")
    return NetworkConfig(input_dim=int(stem.shape[1]), output_dim=output_dim, encoder_widths=tuple(encoder),
                         decoder_widths=tuple(decoder), n_head=n_head, d_k=qk // n_head)


def read_checkpoint(path: str | os.PathLike) -> tuple[NetworkConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint file of either format -> (config, state dict with our names, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass the path of a .pth file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for a bad or truncated file
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint; pass a U-TILISE .pth file (released or from `utilise train`)"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds a {type(raw).__name__}, not a checkpoint dict")

    if raw.get("format") == FORMAT_NAME:
        if int(raw.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: made by a newer utilise (format {raw['format_version']}); upgrade")
        try:
            config = NetworkConfig.from_dict(raw["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: invalid network configuration ({err})") from None
        return config, dict(raw["state_dict"]), dict(raw.get("metadata", {}))

    state = raw.get("model_state_dict", raw)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no model weights inside (expected 'model_state_dict')")
    state = rename_original_state_dict(state, str(path))
    metadata = {"source_format": "original", "epoch": raw.get("epoch"), "iter": raw.get("iter")}
    return infer_config(state, str(path)), state, metadata


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
    model.metadata.setdefault("checkpoint_sha256", file_sha256(checkpoint))
    model.metadata.setdefault("checkpoint_path", str(checkpoint))
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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (the identity of a checkpoint in output tags)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
