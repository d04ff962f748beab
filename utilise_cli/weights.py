"""The weights that ship inside the package, and how a user names a checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CheckpointError

WEIGHTS_DIR = Path(__file__).with_name("weights")
DEFAULT_WEIGHTS = WEIGHTS_DIR / "utilise_s2_4band.pth"
SHIPPED = "shipped"  # the name that stands for DEFAULT_WEIGHTS wherever a checkpoint is asked for


def default_checkpoint() -> Path:
    """Path of the shipped checkpoint, or CheckpointError with the fix when none is installed."""
    if not DEFAULT_WEIGHTS.is_file():
        raise CheckpointError(f"{DEFAULT_WEIGHTS}: no shipped weights in this installation; "
                              "pass --checkpoint PATH or --method linear")
    return DEFAULT_WEIGHTS


def resolve_checkpoint(spec: str | os.PathLike | None) -> Path:
    """A checkpoint named by the user: None or 'shipped' -> the shipped weights, anything else a path."""
    if spec is None or str(spec) == SHIPPED:
        return default_checkpoint()
    return Path(spec)
