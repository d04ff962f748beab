"""Where chips go on a raster, the weight window that blends their overlaps, and the column panels filled one
at a time."""

from __future__ import annotations

from dataclasses import dataclass

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


def dates_to_fill(observed: np.ndarray) -> np.ndarray:
    """... x T x H x W bool (dates on axis -3) -> ... x T: the dates with a pixel to fill, one not observed then but
    on another date. A pixel never observed is not one: it becomes nodata whatever a method says."""
    return (~observed & observed.any(axis=-3, keepdims=True)).any(axis=(-2, -1))


def chip_batch(stripe: np.ndarray, starts: list[int], chip: int) -> np.ndarray:
    """The chips of ``stripe`` (... x h x W) whose first columns are ``starts``, as B x ... x chip x chip.

    Where every chip lies whole in the stripe and the starts are evenly spaced (all but a row's last few chips),
    a view of the stripe whose first axis steps from chip to chip: no copy (the chips overlap, so the view must
    only be read). Otherwise a copy, edge-padded where a chip runs past the stripe (rasters smaller than one
    chip, the last chip row of a raster)."""
    steps = set(np.diff(starts).tolist())
    if stripe.shape[-2] == chip and starts[-1] + chip <= stripe.shape[-1] and len(steps) <= 1:
        first = stripe[..., starts[0]: starts[0] + chip]
        step = steps.pop() if steps else 0
        return np.lib.stride_tricks.as_strided(first, (len(starts), *first.shape),
                                               (step * stripe.strides[-1], *first.strides))
    return np.stack([_pad_to(stripe[..., x0: x0 + chip], chip, chip) for x0 in starts])


def _pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Edge-pad the last two axes up to height x width."""
    ph, pw = height - array.shape[-2], width - array.shape[-1]
    if ph <= 0 and pw <= 0:
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, max(ph, 0)), (0, max(pw, 0))]
    return np.pad(array, pad, mode="edge")


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


@dataclass(frozen=True)
class Panel:
    """A band of columns filled on its own, top to bottom: it writes columns [col0, col1); the chips that reach
    them start at ``cols`` and span columns [lo, hi), a little wider (chips at its edges also run for the
    neighbouring panel)."""

    col0: int
    col1: int
    cols: tuple[int, ...]
    lo: int
    hi: int

    @property
    def width(self) -> int:
        """Columns read and blended (hi - lo)."""
        return self.hi - self.lo

    @property
    def owned(self) -> slice:
        """The written columns, as a slice of the panel's read columns."""
        return slice(self.col0 - self.lo, self.col1 - self.lo)


def column_panels(width: int, cols: list[int], chip: int, panel_width: int) -> list[Panel]:
    """Split a raster ``width`` pixels wide, with chip columns starting at ``cols``, into panels that write about
    ``panel_width`` columns each (0: one panel, the whole width), so that memory no longer grows with the width.

    Each panel runs every chip that touches its columns, so a pixel gets the same chips, summed in the same
    order, as in one panel: the outputs do not depend on the panels. A last panel narrower than half of
    ``panel_width`` is joined to the one before."""
    edges = [0, width] if panel_width <= 0 else [*range(0, width, panel_width), width]
    if len(edges) > 2 and edges[-1] - edges[-2] < panel_width // 2:
        del edges[-2]
    panels = []
    for col0, col1 in zip(edges[:-1], edges[1:]):
        touching = tuple(c for c in cols if c < col1 and c + chip > col0)
        panels.append(Panel(col0, col1, touching, touching[0], min(touching[-1] + chip, width)))
    return panels


def chip_count(rows: list[int], panels: list[Panel]) -> int:
    """Chips a fill runs (or passes through): every chip row of every panel, the chips at panel edges once per
    panel."""
    return len(rows) * sum(len(panel.cols) for panel in panels)
