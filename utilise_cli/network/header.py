"""What a checkpoint says about its network, read without torch: the configuration and the metadata.

``utilise fill --dry-run`` plans a fill from this alone, so that it does not import torch (1.3-1.6 s and some
190 MB). The file's pickle is read with an unpickler that knows only what a state dict of tensors holds
(ordered dicts, tensor rebuilds, storage types) and builds shapes instead of tensors; anything else in it
makes :func:`read_header` answer None, and torch's own loader (``weights_only``) is the one that reads it.
The weights themselves are not read: whether they are finite and fit the network is checked when the
network is loaded (:func:`utilise_cli.network.checkpoint.load_model`). Both readers share the two formats'
reading (:func:`interpret`) and a checkpoint's identity in the outputs' tags (:func:`identity`).
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import CheckpointError
from .config import NetworkConfig

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


def rename_original_state_dict(state: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Map the original implementation's parameter names onto this package's module names."""
    renamed: dict[str, Any] = {}
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


def infer_config(state: Mapping[str, Any], source: str, n_head: int = 4) -> NetworkConfig:
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


class _Shape:
    """A tensor as far as the header needs one: its shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def _rebuild_tensor(storage: object, offset: int, size: tuple[int, ...], *args: object) -> _Shape:
    return _Shape(tuple(int(n) for n in size))


class _Storage:
    """A storage type or instance: its bytes are not read."""


_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
_KNOWN = {("collections", "OrderedDict"): collections.OrderedDict,
          ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
          **{("torch", f"{kind}Storage"): _Storage for kind in _STORAGES}}


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _KNOWN[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not read without torch") from None

    def persistent_load(self, pid: Any) -> _Storage:
        return _Storage()


def interpret(raw: Any, path: Path, is_tensor: Callable[[Any], bool]) -> tuple[NetworkConfig, dict[str, Any],
                                                                       dict[str, Any]]:
    """(configuration, state dict with our names, metadata) of a checkpoint file's unpickled contents, either
    format; ``is_tensor`` tells the state's values from anything else. Raises CheckpointError naming ``path``."""
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
    if not isinstance(state, dict) or not state or not all(is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: no model weights inside (expected 'model_state_dict')")
    state = rename_original_state_dict(state, str(path))
    metadata = {"source_format": "original", "epoch": raw.get("epoch"), "iter": raw.get("iter")}
    return infer_config(state, str(path)), state, metadata


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path; CheckpointError where no file is there."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass the path of a .pth file")
    return path


def identity(path: str | os.PathLike) -> dict[str, str]:
    """What names a checkpoint in a network's metadata (unless the file's own metadata says): the SHA-256 of its
    bytes (written into the output tags) and its path."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"checkpoint_sha256": digest.hexdigest(), "checkpoint_path": str(path)}


@dataclass(frozen=True)
class CheckpointHeader:
    """A checkpoint's network without its weights: the configuration, and the metadata a loaded network has."""

    config: NetworkConfig
    metadata: dict[str, Any]


def read_header(path: str | os.PathLike) -> CheckpointHeader | None:
    """The header of a checkpoint file of either format, with the errors of
    :func:`~utilise_cli.network.checkpoint.read_checkpoint`; None where the file cannot be read without torch
    (not torch's zip format, or objects the unpickler does not know)."""
    path = checkpoint_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return None
            with archive.open(name) as handle:
                raw = _HeaderUnpickler(handle).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
        return None
    config, _, metadata = interpret(raw, path, lambda value: isinstance(value, _Shape))
    return CheckpointHeader(config, {**identity(path), **metadata})
