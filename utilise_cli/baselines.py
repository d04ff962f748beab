"""Interpolation baselines along time, per pixel: last, next, closest and linear (weighted by days), and
``adjusted``: linear plus the date's own anomaly (an offset, a gain and a lean towards one neighbour), fitted on
the date's observed pixels (date_anomaly).

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

METHODS = ("linear", "closest", "last", "next", "adjusted")

# Spread of a date's own anomaly into its gaps (adjusted, see date_anomaly): Gaussian sigma in pixels, the
# share of Gaussian-weighted observed neighbours below which the date-wide median takes over, the margin around
# unobserved pixels that is not trusted (pixels), and the quantiles anomalies are clipped to.
# Chosen on simulated gaps in the HU/RO and Portugal series (training-policy data), never on Sweden.
ANOMALY_SIGMA_PX = 4.0
ANOMALY_MIN_SUPPORT = 0.05
ANOMALY_BUFFER_PX = 1
ANOMALY_CLIP = (0.1, 0.9)
QUANTILE_SAMPLES = 2048  # pixels per date the clip quantiles are estimated from
# A date's fit of its anomaly (see date_fit): a ridge in reflectance^2 that keeps the fit near none where its
# variables hardly vary, and the pixels' worth of no fit it is pulled towards (a date with few observed pixels
# keeps a pure offset). Chosen on simulated gaps in the WorldCereal, minicube, HU/RO and Portugal series
# (training-policy data), never on Sweden.
FIT_RIDGE = 1e-4
FIT_PRIOR_PIXELS = 50


def _carried(values: torch.Tensor, observed: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """For every frame of values N x T x K x H x W, the values of the nearest frame at or before it (at or after
    it with ``reverse``) where observed N x T x H x W is True; NaN where there is none."""
    out = torch.empty_like(values)
    last = torch.full_like(values[:, 0], math.nan)
    seen = observed.unsqueeze(-3)
    # A loop over the few dates, each step on one frame: indices and a gather over the whole block cost more.
    for i in reversed(range(values.shape[1])) if reverse else range(values.shape[1]):
        last = torch.where(seen[:, i], values[:, i], last, out=out[:, i])
    return out


def _blend(method: str, before: torch.Tensor, after: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
    """Frames S x C x H x W filled from the values of their neighbours in time, ``before`` and ``after`` S x (C + 1)
    x H x W whose last channel is the neighbour's day (NaN = no neighbour), at the frames' ``days`` S; NaN where a
    pixel has neither."""
    c = before.shape[-3] - 1
    day_before, day_after = before[:, c:], after[:, c:]
    has_prev, has_next = ~day_before.isnan(), ~day_after.isnan()
    if method == "last":
        weight_after = (~has_prev).float()
    elif method == "next":
        weight_after = has_next.float()
    else:
        days = days.view(-1, 1, 1, 1)
        gap_before, gap_after = days - day_before, day_after - days
        if method == "closest":
            weight_after = (gap_after < gap_before).float()  # ties go to the past
        else:
            span = gap_before + gap_after
            weight_after = torch.where(span > 0, gap_before / span.clamp(min=1e-12), 0.0)
        weight_after = torch.where(has_prev, torch.where(has_next, weight_after, 0.0), 1.0)
    # A side with no neighbour is NaN but weighted 0: lerp would carry its NaN, so it is zeroed first.
    filled = torch.lerp(before[:, :c].nan_to_num(), after[:, :c].nan_to_num(), weight_after)
    # NaN where neither side has a day (fmin keeps the one there is), else + 0: arithmetic, where a masked fill
    # branches per element (0.5 ms for the 7 gap dates of a 128-px chip, 2-core AMD EPYC).
    return filled.add_(torch.fmin(day_before, day_after).mul_(0))


def one_channel_more(x: torch.Tensor) -> torch.Tensor:
    """An empty tensor ... x (C + 1) x H x W for x ... x C x H x W (its dtype and device): written in place,
    where torch.cat would first make its parts and then copy them."""
    *lead, c, h, w = x.shape
    return torch.empty(*lead, c + 1, h, w, dtype=x.dtype, device=x.device)


def _blur_radius(sigma: float) -> int:
    """Pixels the Gaussian reaches: scipy.ndimage.gaussian_filter's truncation at 4 sigma."""
    return int(4.0 * sigma + 0.5)


@functools.lru_cache(maxsize=16)
def _blur_matrix(size: int, sigma: float, device: str) -> torch.Tensor:
    """size x size matrix of a 1-D Gaussian filter with scipy.ndimage.gaussian_filter's kernel (truncated at 4
    sigma) and edge mode 'reflect' (d c b a | a b c d | d c b a) folded in, for any size."""
    radius = _blur_radius(sigma)
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
    matrix products, which beat a 33-tap convolution on every device.

    On a CPU each product is taken in bands of 2 x radius output rows (columns), each from the input rows
    within the kernel's reach: the matrix is zero beyond it, and the bands skip those zeros (128-px frames: 4
    bands of 32 from at most 64; the residual network's input some 5 % faster on 2 cores, the blur a third
    faster on one). A GPU takes the whole products, at less cost than more of them."""
    radius = _blur_radius(sigma)
    rows = _blur_matrix(x.shape[-2], sigma, str(x.device))
    cols = _blur_matrix(x.shape[-1], sigma, str(x.device))
    if x.device.type != "cpu":
        return rows @ x @ cols.T
    y = torch.empty_like(x)
    for out, source in _bands(x.shape[-2], radius):
        y[..., out, :] = rows[out, source] @ x[..., source, :]
    z = torch.empty_like(x)
    for out, source in _bands(x.shape[-1], radius):
        z[..., out] = y[..., source] @ cols[out, source].T
    return z


def _bands(size: int, radius: int) -> list[tuple[slice, slice]]:
    """(output rows, the input rows they draw on) for a banded filter of ``radius``: bands of 2 x radius rows
    (the last one longer), each with ``radius`` input rows either side."""
    width = max(2 * radius, 1)
    starts = list(range(0, max(size - width, 0) + 1, width))
    ends = starts[1:] + [size]
    return [(slice(a, b), slice(max(0, a - radius), min(size, b + radius))) for a, b in zip(starts, ends)]


def _near(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels within ``radius`` (a square) of a True pixel of mask ... x H x W, or on it."""
    near = mask.clone()
    for axis in (-2, -1):  # a square is a band of rows, then one of columns
        grown = near.clone()
        size = near.shape[axis]
        for d in range(1, min(radius, size - 1) + 1):
            grown.narrow(axis, d, size - d).logical_or_(near.narrow(axis, 0, size - d))
            grown.narrow(axis, 0, size - d).logical_or_(near.narrow(axis, d, size - d))
        near = grown
    return near


def nanquantile(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """torch.nanquantile(values, q, dim=-1) (linear interpolation; NaN where a row has no number), Q x ...

    On the CPU the rows are sorted by numpy, whose vectorised sort is about 17x faster than torch's there (28
    rows of 2048: 65 us against 1.1 ms); the ranks are then picked as torch picks them, so the result is the same."""
    if values.device.type == "cpu" and not values.requires_grad:
        ordered = torch.from_numpy(np.sort(values.numpy(), axis=-1))  # NaN last, as torch.sort puts them
    else:
        ordered = values.sort(dim=-1).values
    count = (~ordered.isnan()).sum(dim=-1, keepdim=True)
    ranks = (q.view(-1, *[1] * values.dim()) * (count - 1)).clamp(min=0)  # a row of NaN: any place is NaN
    below = ranks.long()
    ordered = ordered.expand(len(q), *ordered.shape)
    low, high = ordered.gather(-1, below), ordered.gather(-1, ranks.ceil().long())
    return low.lerp(high, ranks - below).squeeze(-1)


def date_anomaly(reflectance: torch.Tensor, observed: torch.Tensor, others: torch.Tensor, change: torch.Tensor
                 ) -> torch.Tensor:
    """How each frame departs from linear interpolation, spread into its unobserved pixels: frames S x C x H x W
    (finite), observed S x H x W, ``others`` S x C x H x W, each frame interpolated linearly from the other
    dates (NaN where they cannot), and ``change`` S x C x H x W, those dates' change across the frame (the
    earlier neighbour minus the later one; 0 where one is missing). Returns S x C x H x W.

    On a date's observed pixels the anomaly is the observation minus the linear interpolation from the
    other dates (haze, illumination, a rain event, a harvest). It is fitted per date and band (date_fit) as
    a gain on the interpolated value and a lean towards the earlier or the later neighbour, plus an offset:
    the Gaussian-weighted local mean (ANOMALY_SIGMA_PX) of what the fit leaves near the date's observed
    pixels, the date's median anomaly far from them. 0 for a date with no observed pixel.

    Real cloud masks miss the thin, bright edges of clouds and shadows. So that those edges do not leak
    into the gap they surround, pixels within ANOMALY_BUFFER_PX of an unobserved pixel are left out, and
    each date's anomalies are clipped to their ANOMALY_CLIP quantiles before they are fitted."""
    known = others.nan_to_num()
    # others is NaN in every band of a pixel or in none (no neighbour on either side): the first band tells.
    support = observed & ~_near(~observed, ANOMALY_BUFFER_PX) & ~others[..., 0, :, :].isnan()
    anomaly = reflectance - known
    # Per date and band: the quantiles of the anomaly over the date's supported pixels, from every k-th pixel
    # (at most QUANTILE_SAMPLES): sorting them all would cost a third of the network's time.
    step = max(1, support[0].numel() // QUANTILE_SAMPLES)
    values = torch.where(support.flatten(-2)[..., None, ::step], anomaly.flatten(-2)[..., ::step], math.nan)
    q = torch.tensor([ANOMALY_CLIP[0], 0.5, ANOMALY_CLIP[1]], device=values.device, dtype=values.dtype)
    low, median, high = nanquantile(values, q).nan_to_num().unsqueeze(-1).unsqueeze(-1)
    weight = support.unsqueeze(-3).float()
    residual = anomaly.clamp_(low, high).mul_(weight)  # 0 off the support (a product: no branch per element)
    fit = date_fit(residual, weight, known, change)
    # What the fit leaves and the support, blurred together (one pair of matrix products for both).
    c = residual.shape[-3]
    spread = one_channel_more(residual)
    torch.addcmul(residual, weight, fit, value=-1, out=spread[..., :c, :, :])  # residual - weight * fit
    spread[..., c:, :, :] = weight
    spread = gaussian_blur(spread, ANOMALY_SIGMA_PX)
    local, near = spread[..., :c, :, :], spread[..., c:, :, :]
    trust = (near / ANOMALY_MIN_SUPPORT).clamp(0, 1)
    offset = local.div_(near.clamp(min=1e-6)).mul_(near > 1e-6)
    return offset.mul_(trust).add_((1 - trust) * median).add_(fit)


def date_fit(residual: torch.Tensor, weight: torch.Tensor, others: torch.Tensor, change: torch.Tensor
             ) -> torch.Tensor:
    """The part of each date's anomaly that follows the interpolated value ``others`` (a gain: the date's
    fields greener, or its contrast higher, than its neighbours' blend) and the neighbours' ``change`` (a
    lean: the date looks more like the earlier or the later neighbour than their days say, as after a
    harvest), S x C x H x W, about the support's mean.

    A two-variable least-squares fit per date and band of the clipped anomalies ``residual`` S x C x H x W (0
    off the support) over the support ``weight`` S x 1 x H x W (0 or 1): ridge-regularised (FIT_RIDGE),
    pulled towards no fit as if FIT_PRIOR_PIXELS more pixels had none (a date with few observed pixels keeps
    a pure offset), each coefficient kept within -1..1. The variables are centred first so that their moments
    keep their precision in float32."""
    count = weight.sum(dim=(-2, -1), keepdim=True)
    n = count.clamp(min=1)

    def mean(v: torch.Tensor) -> torch.Tensor:  # over the support, of v that is 0 off it
        return v.sum(dim=(-2, -1), keepdim=True) / n

    x, d = others - mean(weight * others), change - mean(weight * change)
    xs, ds = x * weight, d * weight  # each weighted once for the three moments (residual is 0 off the support)
    xx, xd, dd = mean(xs * x) + FIT_RIDGE, mean(xs * d), mean(ds * d) + FIT_RIDGE
    xr, dr = mean(x * residual), mean(d * residual)
    scale = count / (count + FIT_PRIOR_PIXELS) / (xx * dd - xd * xd)
    gain = (scale * (dd * xr - xd * dr)).clamp(-1, 1)
    lean = (scale * (xx * dr - xd * xr)).clamp(-1, 1)
    return x.mul_(gain).add_(d.mul_(lean))


def interpolate_tensor(method: str, reflectance: torch.Tensor, observed: torch.Tensor,
                       days: torch.Tensor) -> torch.Tensor:
    """Fill the unobserved pixels with ``method``: reflectance ... x T x C x H x W (float32), observed
    ... x T x H x W (bool), days T, all on one device.

    Only frames with something to fill are worked on (on real chips about half of them)."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    t, c, h, w = reflectance.shape[-4:]
    series, seen = reflectance.reshape(-1, t, c, h, w), observed.reshape(-1, t, h, w)
    days = days.to(device=reflectance.device, dtype=torch.float32)
    # Each frame's values with its day as one more channel, so that one pass carries both to the frames around.
    values = one_channel_more(series)
    torch.nan_to_num(series, out=values[:, :, :c])
    values[:, :, c] = days.view(1, t, 1, 1)
    before, after = _carried(values, seen), _carried(values, seen, reverse=True)
    gaps = (~seen).flatten(-2).any(-1).flatten().nonzero().squeeze(-1)  # frames (n * T + t) with a gap
    if len(gaps) == 0:
        return reflectance.clone()
    frame_days, frame_seen = days[gaps % t], seen.flatten(0, 1)[gaps]
    if method == "adjusted":
        # At a gap pixel a frame's neighbours are those among the other dates: their blend is linear's fill.
        earlier, later = _other_dates(before, after, gaps, t)
        others = _blend("linear", earlier, later, frame_days)
        change = (earlier[:, :c] - later[:, :c]).nan_to_num()
        filled = date_anomaly(values.flatten(0, 1)[gaps, :c], frame_seen, others, change).add_(others)
    else:
        filled = _blend(method, before.flatten(0, 1)[gaps], after.flatten(0, 1)[gaps], frame_days)
    out = series.clone()
    kept = torch.where(frame_seen.unsqueeze(-3), series.flatten(0, 1)[gaps], filled)
    out.flatten(0, 1).index_copy_(0, gaps, kept)
    return out.reshape(reflectance.shape)


def _other_dates(before: torch.Tensor, after: torch.Tensor, gaps: torch.Tensor, t: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The neighbours of frames ``gaps`` (indices n * T + t) among the other dates only: of ``before`` (N x T x K x
    H x W, see _carried) at the frame before, of ``after`` at the frame after; NaN at a series' ends."""
    before, after = before.flatten(0, 1), after.flatten(0, 1)
    earlier, later = before[(gaps - 1).clamp(min=0)], after[(gaps + 1).clamp(max=len(after) - 1)]
    # By frame number: a boolean index here became a masked fill of every element.
    earlier.index_fill_(0, (gaps % t == 0).nonzero().squeeze(-1), math.nan)
    later.index_fill_(0, (gaps % t == t - 1).nonzero().squeeze(-1), math.nan)
    return earlier, later


def interpolate(method: str, reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray) -> np.ndarray:
    """:func:`interpolate_tensor` on numpy arrays (on the CPU); returns float32."""
    with torch.inference_mode():
        filled = interpolate_tensor(method, torch.from_numpy(np.ascontiguousarray(reflectance, np.float32)),
                                    torch.from_numpy(np.ascontiguousarray(observed, bool)),
                                    torch.from_numpy(np.asarray(days, np.float32)))
    return filled.numpy()
