"""The weights that ship inside the package."""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError

WEIGHTS_DIR = Path(__file__).with_name("weights")
DEFAULT_WEIGHTS = WEIGHTS_DIR / "utilise_s2_4band.pth"


def default_checkpoint() -> Path:
    """Path of the shipped checkpoint, or CheckpointError with the fix when none is installed."""
    if not DEFAULT_WEIGHTS.is_file():
        raise CheckpointError(f"{DEFAULT_WEIGHTS}: no shipped weights in this installation; "
                              "pass --checkpoint PATH or --method linear")
    return DEFAULT_WEIGHTS
