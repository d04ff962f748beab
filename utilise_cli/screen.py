"""A multi-temporal cloud and shadow screen: the clouds and shadows that the given masks miss (thin cloud, the bright
rims around masked clouds, shadows), found by comparing each date with the pixel's own clear dates.

A pixel is cloud when it is brighter than its clear reference in blue (B2) and red (B4) by CLOUD_BLUE / CLOUD_RED
reflectance, and either lies within NEAR_MASK_PX of a masked pixel or is part of a dense patch of such pixels (at
least PATCH_SHARE of the PATCH_PX square around it), so that single bright pixels (a roof, a vehicle) are left
alone. Within NEAR_MASK_PX of a masked pixel a blue brightening of RIM_BLUE is enough (the bright rim of a masked
cloud) if blue brightens at least BLUE_OVER_RED x as much as red, or if the pixel is also brighter by RIM_BLUE than
on the nearest clear dates before and after it: soil that brightens more in red stays bright from one clear date to
the next, a rim comes and goes. Without masks the same holds within NEAR_MASK_PX of the screen's own dense patches.
A pixel is shadow when it is darker than its reference in NIR (B8) by SHADOW_NIR, and by SHADOW_TRANSIENT_NIR than
on the nearest clear dates before and after it (a shadow comes and goes, a harvest stays), not brighter in blue,
and within SHADOW_NEAR_PX of cloud. The reference is the lower quartile (blue, red) and the median (NIR) over the
dates that the given mask calls clear (over all valid dates without masks).

Thresholds in reflectance, chosen on the training-policy WorldCereal series against its SCL classes
(scripts/screen_agreement.py), and the shadow's before-and-after test on what the screen does to the filling of
simulated gaps in the training-policy sets (scripts/screen_quality.py); never on the evaluation data. Everything is
local (bounded context of screen_margin rows), so a row screens alike in any stripe.
"""

from __future__ import annotations

import functools

import numpy as np

from .cores import each_on_threads, work_threads

CLOUD_BLUE = 0.04
CLOUD_RED = 0.03
RIM_BLUE = 0.03  # on the sample, before the transient rule: 0.04 -> 577 rims, 0.03 -> 444, 0.02 -> 444, 5 % more filled
BLUE_OVER_RED = 0.8
SHADOW_NIR = 0.08
# Shadows also darker than the nearest clear dates before and after by this much: on the training-policy sets
# 0.04 and 0.08 both turned the screen's small cost to the filling of simulated gaps into a gain
# (scripts/screen_quality.py); 0.04 left fewer dark remnants next to the masks (WorldCereal 31,521 against 32,829).
SHADOW_TRANSIENT_NIR = 0.04
NEAR_MASK_PX = 3
PATCH_PX = 7
PATCH_SHARE = 0.5
SHADOW_NEAR_PX = 12
MIN_CLEAR_DATES = 3
# How far a pixel's verdict can reach: a shadow looks SHADOW_NEAR_PX for cloud; without masks that cloud can be a rim
# NEAR_MASK_PX from a patch pixel, which is one for a dense box centred up to PATCH_PX // 2 away, whose count
# reaches PATCH_PX // 2 further. The former max(3, 7, 12) + 7 = 19 px left no-mask screens depending on where the
# pieces were cut (a 2048-px mosaic of the sample: 312 pixel-dates).
SCREEN_MARGIN_PX = SHADOW_NEAR_PX + NEAR_MASK_PX + 2 * (PATCH_PX // 2)
# With masks a rim lies NEAR_MASK_PX from the given mask, which needs no context: the longest chain is a shadow's
# cloud that is a patch pixel (or bright next to the mask). 18 instead of 21 px: a 96-row chip row's window 6 rows
# shorter; reading, decoding and screening every chip row of a 2048^2 stack 1.63 -> 1.56 s (medians, 2-core EPYC).
SCREEN_MARGIN_WITH_MASKS_PX = SHADOW_NEAR_PX + max(NEAR_MASK_PX, 2 * (PATCH_PX // 2))


def screen_margin(masks: bool) -> int:
    """Pixels of context the screen needs on each side of what it screens, with the given masks or without."""
    return SCREEN_MARGIN_WITH_MASKS_PX if masks else SCREEN_MARGIN_PX

# Columns screened at a time, split among the threads. Each piece costs some 360 numpy calls whatever its width,
# and its margins: a 2048-px window of 10 dates on 2 cores took 45 ms in pieces of 256 columns, 39 ms in pieces
# of 512 (a 1024-px one 23 -> 20 ms), for 32 MB more of temporaries (2-core AMD EPYC).
SCREEN_BLOCK_PX = 1024
SCREEN_THREADS = 4  # at most; beyond 4 the pieces get narrow and their margins cost more than the threads win


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Boolean mask T x H x W grown by ``px`` pixels (a square) on each date; nothing comes from beyond the edges."""
    return _grow_along(_grow_along(mask, px, 1), px, 2)


def _grow_along(mask: np.ndarray, px: int, axis: int) -> np.ndarray:
    """Each element True where a True lies within ``px`` along ``axis``. Windows of 2^k are built by doubling and
    two of them cover the 2 px + 1 window: a few passes whatever px is (scipy's maximum_filter took 10 ms a call
    on a 1024-px stripe of 10 dates, for any size). baselines._near does the same in torch, which this module
    must not import (`utilise --help` and `--dry-run` load no torch)."""
    n, length = mask.shape[axis], 2 * px + 1
    width = 1 << (length.bit_length() - 1)  # the largest power of 2 <= length
    run = _padded(mask, px, axis)  # run[i]: OR over `step` elements from i
    step = 1
    while step < width:
        run = _part(run, axis, 0, run.shape[axis] - step) | _part(run, axis, step, run.shape[axis])
        step *= 2
    return _part(run, axis, 0, n) | _part(run, axis, length - width, length - width + n)


def _padded(a: np.ndarray, px: int, axis: int) -> np.ndarray:
    """``a`` with ``px`` zeros before and after it along ``axis``. (np.pad's own bookkeeping costs more than the
    copy: growing a 10 x 140 x 554-px piece by 3 px took 0.36 instead of 0.53 ms; 2-core AMD EPYC.)"""
    shape = list(a.shape)
    shape[axis] += 2 * px
    out = np.zeros(shape, a.dtype)
    _part(out, axis, px, px + a.shape[axis])[...] = a
    return out


def _part(a: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    """The view of elements [start, stop) of ``a`` along ``axis``."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, stop)
    return a[tuple(index)]


@functools.lru_cache(maxsize=None)
def _comparators(n: int, keep: int | None = None) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sorting network for n elements: the pairs (a, b), a < b, to order in turn. With
    ``keep``, only those that the first ``keep`` places depend on: they then hold the ``keep`` smallest, in order."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed, kept = set(range(n if keep is None else keep)), []
    for a, b in reversed(pairs):
        if a in needed or b in needed:
            kept.append((a, b))
            needed |= {a, b}
    return tuple(reversed(kept))


def _smallest_over_dates(values: np.ndarray, usable: np.ndarray, keep: int) -> list[np.ndarray]:
    """The ``keep`` smallest of values T x H x W along the dates where ``usable`` (T x H x W; inf elsewhere, so
    NaN there does no harm), in order: ``keep`` frames H x W. A sorting network of whole-frame minimum / maximum
    passes: np.sort along the short first axis costs about 5x more (10 dates, a 1024-px stripe: 6.8 vs 1.4 ms)."""
    if len(values) > 64:
        return list(np.sort(np.where(usable, values, np.inf), axis=0)[:keep])
    # A copy with inf written over the unusable dates: np.where(usable, values, inf) took 3x as long (10 dates,
    # a 134 x 1062 window: 1.55 against 0.54 ms; 2-core AMD EPYC).
    stack = np.array(values, np.float32)
    np.copyto(stack, np.float32(np.inf), where=~usable)
    frames = list(stack)
    spare = np.empty_like(frames[0])
    for a, b in _comparators(len(frames), keep):
        np.minimum(frames[a], frames[b], out=spare)
        np.maximum(frames[a], frames[b], out=frames[b])
        frames[a], spare = spare, frames[a]
    return frames[:keep]


def _pick(frames: list[np.ndarray], at: list[np.ndarray]) -> np.ndarray:
    """frames[i] per pixel where at[i - 1] (H x W bool, for i >= 1), else frames[0]: a pass per frame, cheaper
    than stacking them for take_along_axis."""
    out = frames[0].copy()
    for frame, where in zip(frames[1:], at):
        np.copyto(out, frame, where=where)
    return out


def _quantile_over_dates(values: np.ndarray, usable: np.ndarray, q: float,
                         min_dates: int = MIN_CLEAR_DATES) -> np.ndarray:
    """Per-pixel quantile over dates of values T x H x W where ``usable``; NaN where fewer than ``min_dates``
    are."""
    return _quantiles_over_dates([values], usable, q, min_dates)[0]


def _quantiles_over_dates(values: list[np.ndarray], usable: np.ndarray, q: float,
                          min_dates: int = MIN_CLEAR_DATES) -> list[np.ndarray]:
    """:func:`_quantile_over_dates` of several bands T x H x W over the same usable dates (counted once)."""
    # np.nanquantile loops over pixels in Python; sorting once (unusable dates last) and interpolating is
    # vectorised. Only the places up to q of the way, and the one after, can be picked: the rest need no order.
    # In float32: a float64 reference made every difference the screen takes with it float64 too, and the screen
    # of a 1024-px piece took 50 ms on one core, now 26 (2-core AMD EPYC). Which place each pixel takes is worked
    # out once for all bands.
    count = usable.sum(axis=0, dtype=np.int16)
    last = np.maximum(count - 1, 0)
    position = np.float32(q) * last.astype(np.float32)
    low = np.floor(position).astype(np.int16)
    high = np.minimum(low + 1, last)
    fraction, enough = position - low, count >= min_dates
    top = min(len(usable), int(q * (len(usable) - 1)) + 2)
    low_at, high_at = ([place == i for i in range(1, top)] for place in (low, high))
    out = []
    for band in values:
        ordered = _smallest_over_dates(band, usable, top)
        below, above = _pick(ordered, low_at), _pick(ordered, high_at)
        with np.errstate(invalid="ignore"):  # inf - inf where no date is usable: NaN, as it should be
            reference = below + fraction * (above - below)
        out.append(np.where(enough, reference, np.float32(np.nan)))
    return out


def _change_from_clear_neighbours(values: np.ndarray, clear: np.ndarray, extreme: np.ufunc) -> np.ndarray:
    """values T x H x W minus ``extreme`` (np.fmin or np.fmax) of the values at the pixel's nearest clear date
    before and after each date: T x H x W, NaN where there is neither."""
    # Over whole frames, carried date by date in place: on the sample's mosaic the shadow test needs 40 % of the
    # pixels, and picking them out first (fancy indexing in, out and back) took 12.1 instead of 3.5 ms for a
    # 134 x 1062 window of 10 dates (2-core AMD EPYC).
    change = np.empty(values.shape, np.float32)
    last = np.full(values.shape[1:], np.nan, np.float32)
    for t in range(len(values)):
        change[t] = last
        np.copyto(last, values[t], where=clear[t])
    last.fill(np.nan)
    for t in reversed(range(len(values))):
        extreme(change[t], last, out=change[t])
        np.subtract(values[t], change[t], out=change[t])
        np.copyto(last, values[t], where=clear[t])
    return change


def screen(reflectance: np.ndarray, occluded: np.ndarray | None, bands: list[str],
           block: int = SCREEN_BLOCK_PX, valid: np.ndarray | None = None) -> np.ndarray:
    """Clouds and shadows the masks miss: reflectance T x C x H x W (0..1, NaN = no data) with ``bands`` among
    them B2, B4 and B8; occluded T x H x W (the given mask) or None (no masks); valid T x H x W (bool: every
    band has data), where the caller knows it already, else worked out from the NaN. Returns T x H x W bool,
    True where the screen adds occlusion (never where the mask already has it).

    Worked out ``block`` columns at a time (each piece with screen_margin columns of context either side, so
    the result is the same as in one piece): its temporaries then do not grow with the raster's width. On
    several cores the pieces are screened on up to SCREEN_THREADS threads, each ``block`` / threads columns wide
    so that the memory in use stays the same (numpy releases the GIL)."""
    width, margin = reflectance.shape[-1], screen_margin(occluded is not None)
    out = np.zeros(reflectance[:, 0].shape, bool)
    threads = work_threads(SCREEN_THREADS)
    block = max(1, block // threads)

    def one(x0: int) -> None:
        x1 = min(x0 + block, width)
        m0, m1 = max(0, x0 - margin), min(width, x1 + margin)
        part = _screen(reflectance[..., m0:m1], None if occluded is None else occluded[..., m0:m1], bands,
                       None if valid is None else valid[..., m0:m1])
        out[..., x0:x1] = part[..., x0 - m0: x1 - m0]

    each_on_threads(one, range(0, width, block), threads, "utilise-screen")
    return out


def _box_count(mask: np.ndarray, px: int) -> np.ndarray:
    """How many True pixels of mask T x H x W lie in the square of side 2 px + 1 around each (none beyond the
    edges), as uint8 (so px <= 7): sums of shifted slices, cheaper than a float filter."""
    # uint8, not int16: a 7 x 7 count of a 2048-px piece of 10 dates in 7.8 instead of 21 ms (twice the lanes per
    # instruction, half the bytes; 2-core AMD EPYC with AVX2).
    count = mask.astype(np.uint8)
    for axis in (1, 2):
        padded, n = _padded(count, px, axis), count.shape[axis]
        count = _part(padded, axis, 0, n).copy()
        for d in range(1, 2 * px + 1):
            count += _part(padded, axis, d, d + n)
    return count


def _screen(reflectance: np.ndarray, occluded: np.ndarray | None, bands: list[str],
            valid: np.ndarray | None) -> np.ndarray:
    # Each band copied out of the stripe once: the passes below then run over contiguous memory, not over a
    # piece's rows strided across the stripe's width and bands (blue - blue_low and red - red_low over a 10 x 140
    # x 554 piece: 0.36 instead of 1.3 ms; with _padded, a 140 x 2048 window screened in 61-64 ms on one core
    # instead of 72-78; 2-core AMD EPYC with AVX-512).
    blue, red, nir = (np.ascontiguousarray(reflectance[:, bands.index(b)]) for b in ("B2", "B4", "B8"))
    valid = np.isfinite(reflectance).all(axis=1) if valid is None else valid
    given = np.zeros(valid.shape, bool) if occluded is None else occluded
    clear = valid & ~given
    blue_low, red_low = _quantiles_over_dates([blue, red], clear, 0.25)
    d_blue, d_red = blue - blue_low, red - red_low
    # Cloud and haze brighten blue at least as much as red; bare soil after a harvest brightens red more.
    brighter = (d_blue > CLOUD_BLUE) & (d_red > CLOUD_RED) & (d_blue >= BLUE_OVER_RED * d_red) & valid
    dense = _box_count(brighter, PATCH_PX // 2) >= PATCH_SHARE * PATCH_PX ** 2
    patches = brighter & grow(dense, PATCH_PX // 2)
    # Without masks the screen's own cloud patches stand for them: their rims are what remains.
    near = grow(given if occluded is not None else patches, NEAR_MASK_PX)
    # Next to a masked cloud, thin cloud and the cloud's bright rim are likely: a weaker brightening is enough.
    # Soil that brightens more in red than in blue stays bright from one clear date to the next; a rim does not.
    rim = near & (d_blue > RIM_BLUE) & valid
    reddish = rim & (d_blue < BLUE_OVER_RED * d_red)
    # Only where a piece has candidates (a clear 134 x 2048 window: 3-5 ms less). NaN, no clear date either side,
    # holds no comparison.
    if reddish.any():
        rim &= ~reddish | (_change_from_clear_neighbours(blue, clear, np.fmax) > RIM_BLUE)
    cloud = patches | (brighter & near) | rim
    clear_sky = clear & ~cloud
    nir_reference, blue_reference = _quantiles_over_dates([nir, blue], clear_sky, 0.5)
    shadow = ((nir - nir_reference < -SHADOW_NIR) & (blue - blue_reference < 0.01) & valid
              & grow(cloud | given, SHADOW_NEAR_PX))
    # A shadow comes and goes; land that darkens in NIR for good (a harvest, a drying summer) stays dark on the
    # next clear date: the darkening must hold against the nearest clear dates before and after too.
    if shadow.any():
        shadow &= _change_from_clear_neighbours(nir, clear_sky, np.fmin) < -SHADOW_TRANSIENT_NIR
    return (cloud | shadow) & ~given


RIM_NEAR_PX, RIM_BRIGHTER = 3, 0.03


def rim_count(blue: np.ndarray, occluded: np.ndarray) -> int:
    """Cloud remnants around the masks in a filled series (issue #16's measure): pixels within RIM_NEAR_PX of
    a date's input mask whose blue (B2 reflectance, T x H x W, NaN = no data) exceeds the pixel's median over
    all dates by more than RIM_BRIGHTER. occluded: the input masks T x H x W."""
    median = _quantile_over_dates(blue, np.isfinite(blue), 0.5, min_dates=1)
    return int((grow(occluded, RIM_NEAR_PX) & (blue - median > RIM_BRIGHTER)).sum())
