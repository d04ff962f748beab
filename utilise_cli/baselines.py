"""Interpolation baselines along time, per pixel: last, next, closest and linear (weighted by days).

All take reflectance T x C x H x W (any values where not observed), observed T x H x W (bool) and
days T, and return T x C x H x W with observed pixels passed through and NaN where a pixel is never
observed. At the ends of the series the nearest observation is carried backward or forward.
"""

from __future__ import annotations



import numpy as np

METHODS = ("linear", "closest", "last", "next")


def _neighbours(observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the previous and next observed frame for every (t, pixel); -1 / T where there is none."""
    t = observed.shape[0]
    index = np.arange(t).reshape((t,) + (1,) * (observed.ndim - 1))
    prev = np.maximum.accumulate(np.where(observed, index, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(observed, index, t)[::-1], axis=0)[::-1]
    return prev, nxt


def interpolate(method: str, reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Fill the unobserved pixels of one series with ``method`` (see module docstring for shapes)."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    t = observed.shape[0]
    days = np.asarray(days, dtype=np.float64).reshape((t,) + (1,) * (observed.ndim - 1))
    prev, nxt = _neighbours(observed)
    has_prev, has_next = prev >= 0, nxt < t
    prev_c, next_c = np.clip(prev, 0, t - 1), np.clip(nxt, 0, t - 1)

    def take(idx: np.ndarray) -> np.ndarray:
        return np.take_along_axis(reflectance, np.broadcast_to(idx[:, None], reflectance.shape), axis=0)

    before, after = take(prev_c), take(next_c)
    if method == "last":
        weight_after = np.where(has_prev, 0.0, 1.0)
    elif method == "next":
        weight_after = np.where(has_next, 1.0, 0.0)
    else:
        gap_before = days - np.take_along_axis(np.broadcast_to(days, prev.shape), prev_c, axis=0)
        gap_after = np.take_along_axis(np.broadcast_to(days, nxt.shape), next_c, axis=0) - days
        if method == "closest":
            weight_after = (gap_after < gap_before).astype(np.float64)  # ties go to the past
        else:
            span = gap_before + gap_after
            weight_after = np.divide(gap_before, span, out=np.zeros_like(span), where=span > 0)
        weight_after = np.where(has_prev, np.where(has_next, weight_after, 0.0), 1.0)
    weight_after = weight_after[:, None].astype(np.float32)
    filled = (1 - weight_after) * np.nan_to_num(before) + weight_after * np.nan_to_num(after)
    never = ~observed.any(axis=0)
    filled = np.where(observed[:, None], reflectance, filled)
    filled[:, :, never] = np.nan
    return filled.astype(np.float32)


