"""Interpolation baselines along time, per pixel: last, next, closest and linear (weighted by days), and
``adjusted``: linear plus the date's own anomaly, estimated from the date's observed pixels (date_anomaly).

All take reflectance ... x T x C x H x W (any values where not observed; leading batch axes allowed),
observed ... x T x H x W (bool) and days T, and return ... x T x C x H x W with observed pixels passed through
and NaN where a pixel is never observed. At the ends of the series the nearest observation is carried backward
or forward.

The work is done in torch (:func:`interpolate_tensor`): vectorised over chips, on the CPU's threads or on the
network's GPU, so that the residual network's input costs little beside the network itself.
:func:`interpolate` is the numpy face of the same code.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("linear", "closest", "last", "next", "adjusted")

# Spread of a date's own anomaly into its gaps (adjusted, see date_anomaly): Gaussian sigma in pixels, the
# share of Gaussian-weighted observed neighbours below which the date-wide median anomaly takes over, the
# margin around unobserved pixels that is not trusted (pixels), and the quantiles anomalies are clipped to.
# Chosen on simulated gaps in the HU/RO and Portugal series (training-policy data), never on Sweden.
ANOMALY_SIGMA_PX = 4.0
ANOMALY_MIN_SUPPORT = 0.05
ANOMALY_BUFFER_PX = 1
ANOMALY_CLIP = (0.1, 0.9)
QUANTILE_SAMPLES = 2048  # pixels per date the clip quantiles are estimated from


def _neighbours(observed: torch.Tensor, include_self: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the previous and next observed frame for every (t, pixel) of observed ... x T x H x W;
    -1 / T where there is none. Without ``include_self`` a frame is never its own neighbour."""
    t = observed.shape[-3]
    frames = observed.unbind(-3)
    # A loop over the few dates: cummax along a strided axis of the whole block costs several times more.
    prev, nxt = [], []
    last = torch.full(frames[0].shape, -1, dtype=torch.int64, device=observed.device)
    for i in range(t):
        if not include_self:
            prev.append(last)
        last = torch.where(frames[i], i, last)
        if include_self:
            prev.append(last)
    last = torch.full(frames[0].shape, t, dtype=torch.int64, device=observed.device)
    for i in reversed(range(t)):
        if not include_self:
            nxt.append(last)
        last = torch.where(frames[i], i, last)
        if include_self:
            nxt.append(last)
    return torch.stack(prev, -3), torch.stack(nxt[::-1], -3)


def _blend(method: str, reflectance: torch.Tensor, days: torch.Tensor, prev: torch.Tensor,
           nxt: torch.Tensor) -> torch.Tensor:
    """Every frame filled from its neighbours ``prev`` / ``nxt`` (... x T x H x W indices, -1 / T = none);
    NaN where a pixel has neither."""
    t = prev.shape[-3]
    days = days.view(t, 1, 1).expand(prev.shape)
    has_prev, has_next = prev >= 0, nxt < t
    prev_c, next_c = prev.clamp(0, t - 1), nxt.clamp(0, t - 1)

    source = reflectance.nan_to_num()  # values at frames that are no neighbour are weighted 0, and may be NaN

    def take(idx: torch.Tensor) -> torch.Tensor:
        return torch.gather(source, -4, idx.unsqueeze(-3).expand(reflectance.shape))

    before, after = take(prev_c), take(next_c)
    if method == "last":
        weight_after = (~has_prev).float()
    elif method == "next":
        weight_after = has_next.float()
    else:
        gap_before = days - torch.gather(days, -3, prev_c)
        gap_after = torch.gather(days, -3, next_c) - days
        if method == "closest":
            weight_after = (gap_after < gap_before).float()  # ties go to the past
        else:
            span = gap_before + gap_after
            weight_after = torch.where(span > 0, gap_before / span.clamp(min=1e-12), 0.0)
        weight_after = torch.where(has_prev, torch.where(has_next, weight_after, 0.0), 1.0)
    weight_after = weight_after.unsqueeze(-3)
    filled = torch.lerp(before, after, weight_after)
    return filled.masked_fill((~has_prev & ~has_next).unsqueeze(-3), math.nan)


@functools.lru_cache(maxsize=16)
def _blur_matrix(size: int, sigma: float, device: str) -> torch.Tensor:
    """size x size matrix of a 1-D Gaussian filter with scipy.ndimage.gaussian_filter's kernel (truncated at 4
    sigma) and edge mode 'reflect' (d c b a | a b c d | d c b a) folded in, for any size."""
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    source = (np.arange(size)[:, None] + offsets[None, :]) % (2 * size)
    source = np.where(source >= size, 2 * size - 1 - source, source)
    matrix = np.zeros((size, size))
    np.add.at(matrix, (np.repeat(np.arange(size), len(offsets)), source.ravel()), np.tile(kernel, size))
    return torch.from_numpy(matrix.astype(np.float32)).to(device)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter over the last two axes (H, W), as scipy.ndimage.gaussian_filter with mode 'reflect':
    two matrix products, which beat a 33-tap convolution on every device."""
    rows = _blur_matrix(x.shape[-2], sigma, str(x.device))
    cols = _blur_matrix(x.shape[-1], sigma, str(x.device))
    return rows @ x @ cols.T


def _near(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels within ``radius`` (a square) of a True pixel of mask ... x H x W; edges repeat outwards."""
    flat = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    flat = F.max_pool2d(F.pad(flat, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)
    return flat.reshape(mask.shape) > 0


def date_anomaly(reflectance: torch.Tensor, observed: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
    """How each date departs from linear interpolation, spread into its unobserved pixels. ... x T x C x H x W.

    On a date's observed pixels the anomaly is the observation minus the linear interpolation from the
    other dates (haze, illumination, a rain event, a harvest). Its Gaussian-weighted local mean
    (ANOMALY_SIGMA_PX) stands in at the date's gaps; far from any observed pixel of the date, the date's
    median anomaly does. 0 for a date with no observed pixel.

    Real cloud masks miss the thin, bright edges of clouds and shadows. So that those edges do not leak
    into the gap they surround, pixels within ANOMALY_BUFFER_PX of an unobserved pixel are left out, and
    each date's anomalies are clipped to their ANOMALY_CLIP quantiles before they are spread."""
    others = _blend("linear", reflectance, days, *_neighbours(observed, include_self=False))
    support = observed & ~_near(~observed, ANOMALY_BUFFER_PX) & ~others.isnan().any(dim=-3)
    residual = torch.where(support.unsqueeze(-3), reflectance - others.nan_to_num(), 0.0)
    # Per date and band: the quantiles of the anomaly over the date's supported pixels (NaN elsewhere), from
    # every k-th pixel (at most QUANTILE_SAMPLES): sorting them all would cost a third of the network's time.
    values = torch.where(support.unsqueeze(-3), residual, math.nan).flatten(-2)
    values = values[..., ::max(1, values.shape[-1] // QUANTILE_SAMPLES)]
    q = torch.tensor([ANOMALY_CLIP[0], 0.5, ANOMALY_CLIP[1]], device=values.device, dtype=values.dtype)
    low, median, high = torch.nanquantile(values, q, dim=-1).nan_to_num().unsqueeze(-1).unsqueeze(-1)
    residual = torch.where(support.unsqueeze(-3), torch.minimum(torch.maximum(residual, low), high), 0.0)
    local = gaussian_blur(residual, ANOMALY_SIGMA_PX)
    weight = gaussian_blur(support.float(), ANOMALY_SIGMA_PX).unsqueeze(-3)
    trust = (weight / ANOMALY_MIN_SUPPORT).clamp(0, 1)
    spread = torch.where(weight > 1e-6, local / weight.clamp(min=1e-6), 0.0)
    return trust * spread + (1 - trust) * median


def interpolate_tensor(method: str, reflectance: torch.Tensor, observed: torch.Tensor,
                       days: torch.Tensor) -> torch.Tensor:
    """Fill the unobserved pixels with ``method``: reflectance ... x T x C x H x W (float32), observed
    ... x T x H x W (bool), days T, all on one device."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    days = days.to(device=reflectance.device, dtype=torch.float32)
    filled = _blend("linear" if method == "adjusted" else method, reflectance, days, *_neighbours(observed))
    if method == "adjusted":
        filled = filled + date_anomaly(reflectance, observed, days)
    return torch.where(observed.unsqueeze(-3), reflectance, filled)


def interpolate(method: str, reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray) -> np.ndarray:
    """:func:`interpolate_tensor` on numpy arrays (on the CPU); returns float32."""
    with torch.inference_mode():
        filled = interpolate_tensor(method, torch.from_numpy(np.ascontiguousarray(reflectance, np.float32)),
                                    torch.from_numpy(np.ascontiguousarray(observed, bool)),
                                    torch.from_numpy(np.asarray(days, np.float32)))
    return filled.numpy()
