"""Where chips go on a raster, and the weight window that blends their overlaps."""

from __future__ import annotations

import numpy as np


def chip_starts(size: int, chip: int, overlap: int) -> list[int]:
    """Start offsets of chips of length ``chip`` along an axis of ``size`` pixels, ``overlap`` apart.

    The last chip is snapped to the edge (it ends at ``size``) instead of running past it; an axis smaller
    than one chip gets a single chip at 0 (the caller pads it).
    """
    if not 0 <= overlap < chip:
        raise ValueError(f"overlap must be in [0, chip size), got {overlap} for chip {chip}")
    if size <= chip:
        return [0]
    step = chip - overlap
    starts = list(range(0, size - chip, step))
    starts.append(size - chip)
    return starts


def ramp_window(chip: int, overlap: int, floor: float = 1e-3) -> np.ndarray:
    """1-D blending weights: 1 in the centre, a cosine (Hann) ramp down over ``overlap`` pixels at each end,
    never below ``floor`` so every pixel keeps some weight."""
    weights = np.ones(chip, dtype=np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap, dtype=np.float64) + 0.5) / overlap)
        weights[:overlap] = ramp
        weights[chip - overlap:] = ramp[::-1]
    return np.maximum(weights, floor).astype(np.float32)


def blend_window(chip: int, overlap: int) -> np.ndarray:
    """chip x chip weights: the outer product of two :func:`ramp_window`."""
    ramp = ramp_window(chip, overlap)
    return np.outer(ramp, ramp)
