"""Interpolation baselines along time, per pixel: last, next, closest and linear (weighted by days), and
``adjusted``: linear plus the date's own anomaly, estimated from the date's observed pixels (date_anomaly).

All take reflectance T x C x H x W (any values where not observed), observed T x H x W (bool) and
days T, and return T x C x H x W with observed pixels passed through and NaN where a pixel is never
observed. At the ends of the series the nearest observation is carried backward or forward.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, maximum_filter

METHODS = ("linear", "closest", "last", "next", "adjusted")

# Spread of a date's own anomaly into its gaps (adjusted, see date_anomaly): Gaussian sigma in pixels, the
# share of Gaussian-weighted observed neighbours below which the date-wide median anomaly takes over, the
# margin around unobserved pixels that is not trusted (pixels), and the quantiles anomalies are clipped to.
# Chosen on simulated gaps in the HU/RO and Portugal series (training-policy data), never on Sweden.
ANOMALY_SIGMA_PX = 4.0
ANOMALY_MIN_SUPPORT = 0.05
ANOMALY_BUFFER_PX = 1
ANOMALY_CLIP = (0.1, 0.9)


def _neighbours(observed: np.ndarray, include_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Index of the previous and next observed frame for every (t, pixel); -1 / T where there is none.
    Without ``include_self`` a frame is never its own neighbour (interpolation from the other dates)."""
    t = observed.shape[0]
    index = np.arange(t).reshape((t,) + (1,) * (observed.ndim - 1))
    prev = np.maximum.accumulate(np.where(observed, index, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(observed, index, t)[::-1], axis=0)[::-1]
    if not include_self:
        prev = np.concatenate([np.full_like(prev[:1], -1), prev[:-1]])
        nxt = np.concatenate([nxt[1:], np.full_like(nxt[:1], t)])
    return prev, nxt


def _blend(method: str, reflectance: np.ndarray, days: np.ndarray, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Every frame filled from its neighbours ``prev`` / ``nxt`` (T x H x W indices, -1 / T = none);
    NaN where a pixel has neither."""
    t = prev.shape[0]
    days = np.asarray(days, dtype=np.float64).reshape((t,) + (1,) * (prev.ndim - 1))
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
    filled[np.broadcast_to((~has_prev & ~has_next)[:, None], filled.shape)] = np.nan
    return filled.astype(np.float32)


def date_anomaly(reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray) -> np.ndarray:
    """How each date departs from linear interpolation, spread into its unobserved pixels. T x C x H x W.

    On a date's observed pixels the anomaly is the observation minus the linear interpolation from the
    other dates (haze, illumination, a rain event, a harvest). Its Gaussian-weighted local mean
    (ANOMALY_SIGMA_PX) stands in at the date's gaps; far from any observed pixel of the date, the date's
    median anomaly does. 0 for a date with no observed pixel.

    Real cloud masks miss the thin, bright edges of clouds and shadows. So that those edges do not leak
    into the gap they surround, pixels within ANOMALY_BUFFER_PX of an unobserved pixel are left out, and
    each date's anomalies are clipped to their ANOMALY_CLIP quantiles before they are spread."""
    others = _blend("linear", reflectance, days, *_neighbours(observed, include_self=False))
    buffer = 2 * ANOMALY_BUFFER_PX + 1
    near_gap = maximum_filter(~observed, size=(1, buffer, buffer), mode="nearest")
    support = observed & ~near_gap & ~np.isnan(others).any(axis=1)
    residual = np.where(support[:, None], reflectance - np.nan_to_num(others), 0.0).astype(np.float32)
    median = np.zeros(residual.shape[:2], np.float32)
    for t in np.flatnonzero(support.any(axis=(1, 2))):
        values = residual[t][:, support[t]]
        low, median[t], high = np.quantile(values, (ANOMALY_CLIP[0], 0.5, ANOMALY_CLIP[1]), axis=1)
        residual[t] = np.where(support[t], np.clip(residual[t], low[:, None, None], high[:, None, None]), 0.0)
    sigma = (0, 0, ANOMALY_SIGMA_PX, ANOMALY_SIGMA_PX)
    local = gaussian_filter(residual, sigma, mode="reflect")
    weight = gaussian_filter(support.astype(np.float32)[:, None], sigma, mode="reflect")
    trust = np.clip(weight / ANOMALY_MIN_SUPPORT, 0, 1)
    spread = np.divide(local, weight, out=np.zeros_like(local), where=weight > 1e-6)
    return (trust * spread + (1 - trust) * median[:, :, None, None]).astype(np.float32)


def interpolate(method: str, reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Fill the unobserved pixels of one series with ``method`` (see module docstring for shapes)."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    filled = _blend("linear" if method == "adjusted" else method, reflectance, days, *_neighbours(observed))
    if method == "adjusted":
        filled = filled + date_anomaly(reflectance, observed, days)
    return np.where(observed[:, None], reflectance, filled).astype(np.float32)
