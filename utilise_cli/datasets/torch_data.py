"""A torch ``Dataset`` over dataset files, and the collate that pads series of mixed lengths.

A sample is a dict: x T x C' x h x w network input (inference.network_input: reflectance 0..1 with gaps and
no-data set to 1 or, for a residual network, interpolated plus a gap channel; SAR channels appended
unmasked), y T x C x h x w target (0 where no data), days T (day of year of the window's first year),
gaps T x h x w (simulated gap), valid T x h x w (the target has data), name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..dates import day_positions
from ..inference import network_input
from .simulate import simulate_gaps
from .series import Series
from .store import DatasetFile, Gaps

SAR_RANGE_DB = (-25.0, 0.0)  # VV / VH backscatter clipped to this range and scaled to 0..1


def sar_to_unit(sar: np.ndarray) -> np.ndarray:
    """Sentinel-1 backscatter in dB -> 0..1 (clipped to -25..0 dB); NaN -> 0."""
    lo, hi = SAR_RANGE_DB
    return np.nan_to_num((np.clip(sar, lo, hi) - lo) / (hi - lo), nan=0.0).astype(np.float32)


def _augment(arrays: list[np.ndarray], k: int, flip: bool) -> list[np.ndarray]:
    """The same rot90 (k quarter turns) and horizontal flip on the last two axes of every array."""
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out


@dataclass
class _Entry:
    series: Series
    gaps: dict[str, Gaps]


class SequenceDataset(Dataset):
    """Samples of the series in dataset files.

    ratio_key: the stored gaps to use (e.g. 'ratio_0.50' of a simulated file); None simulates gaps anew for
    every sample from the series' own cloudy dates, else ``library`` (training). crop: side of a random
    square crop (None = whole frames). max_frames: length of a random contiguous window (0 = all).
    augment: the same random rot90 / flip for all frames. full_above: a simulated gap covering more than
    this fraction of a frame hides the whole frame (training only). samples: length of an epoch.
    residual: inputs for a residual network (gaps filled by this baseline, plus a gap channel).
    """

    def __init__(self, files: Sequence[str | os.PathLike], ratio_key: str | None = None, crop: int | None = None,
                 max_frames: int = 10, augment: bool = False, ratio: float = 0.5,
                 library: Sequence[np.ndarray] = (), full_above: float = 1.0, samples: int | None = None,
                 seed: int = 0, residual: str = "") -> None:
        self.entries: list[_Entry] = []
        for path in files:
            with DatasetFile(path) as data:
                self.entries += [_Entry(item.series, item.gaps) for item in data]
        self.ratio_key, self.crop, self.max_frames = ratio_key, crop, max_frames
        self.augment, self.ratio, self.library, self.full_above = augment, ratio, list(library), full_above
        self.samples = samples or len(self.entries)
        self.residual = residual
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.samples

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        entry = self.entries[index % len(self.entries)]
        s = entry.series
        t, _, h, w = s.frames.shape
        start, stop = 0, t
        if self.max_frames and t > self.max_frames:
            start = int(rng.integers(0, t - self.max_frames + 1)) if self.ratio_key is None else 0
            stop = start + self.max_frames
        ys, xs = slice(0, h), slice(0, w)
        if self.crop:
            size = min(self.crop, h, w)
            y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            ys, xs = slice(y0, y0 + size), slice(x0, x0 + size)
        target = s.frames[start:stop, :, ys, xs]
        if self.ratio_key is None:
            own = list(s.library) if s.library is not None else []
            gaps = simulate_gaps(stop - start, target.shape[-2], target.shape[-1], self.ratio, [own, self.library],
                                 rng).mask
        else:
            gaps = entry.gaps[self.ratio_key].mask[start:stop, ys, xs]
        if self.full_above < 1.0:
            full = gaps.reshape(len(gaps), -1).mean(axis=1) > self.full_above
            gaps = gaps | full[:, None, None]
        days = day_positions(s.dates[start:stop])
        x = network_input(target, gaps, days, self.residual)
        if s.sar is not None:
            x = np.concatenate([x, sar_to_unit(s.sar[start:stop, :, ys, xs])], axis=1)
        valid = ~np.isnan(target).any(axis=1)
        y = np.nan_to_num(target, nan=0.0)
        if self.augment:
            x, y, gaps, valid = _augment([x, y, gaps, valid], int(rng.integers(4)), bool(rng.integers(2)))
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(y),
                "days": torch.tensor(days, dtype=torch.float32),
                "gaps": torch.from_numpy(np.ascontiguousarray(gaps)), "valid": torch.from_numpy(valid),
                "name": s.name}

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index, self.rng)


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples, padding shorter series at the end with frames of 0 on day 0 (the network's padding).

    Adds ``frames``: B x T bool, True for real frames. Crops must share h x w."""
    t = max(len(b["days"]) for b in batch)
    out: dict[str, Any] = {"name": [b["name"] for b in batch]}
    for key in ("x", "y", "days", "gaps", "valid"):
        tensors = []
        for b in batch:
            value = b[key]
            pad = t - value.shape[0]
            if pad:
                value = torch.cat([value, value.new_zeros((pad, *value.shape[1:]))])
            tensors.append(value)
        out[key] = torch.stack(tensors)
    out["frames"] = torch.stack([torch.arange(t) < len(b["days"]) for b in batch])
    return out
