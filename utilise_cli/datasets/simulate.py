"""Synthetic gaps as the U-TILISE paper makes them, stored so that evaluation is repeatable.

Of a series of T clear frames, n is drawn uniformly in 1..T and ceil(ratio * n) frames (never frame 0)
receive a real cloud mask with at least 10 % cover, taken from other dates of the same place when the
series has any, else from the mask library. Every draw comes from a generator seeded by (seed, series
name, ratio), so the same seed gives the same file.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DatasetError
from .masks import draw_mask, load_mask_libraries
from .store import DatasetFile, Gaps, StoredSeries, gaps_key, write_dataset

log = logging.getLogger(__name__)


def series_rng(seed: int, name: str, ratio: float) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), int(round(ratio * 1000))])


def choose_masked_frames(length: int, ratio: float, rng: np.random.Generator,
                         protected: Sequence[int] = (0,)) -> np.ndarray:
    """Sorted indices of the frames to mask: ceil(ratio * n) of them, n uniform in 1..length, never
    ``protected``."""
    candidates = np.array([t for t in range(length) if t not in protected])
    n = int(rng.integers(1, length + 1))
    count = min(len(candidates), math.ceil(ratio * n))
    return np.sort(rng.choice(candidates, size=count, replace=False)) if count else np.zeros(0, dtype=int)


def simulate_gaps(length: int, height: int, width: int, ratio: float, pools: Sequence[Sequence[np.ndarray]],
                  rng: np.random.Generator) -> Gaps:
    """Gaps for a length x height x width series: which frames, and the superimposed real masks."""
    frames = choose_masked_frames(length, ratio, rng)
    mask = np.zeros((length, height, width), dtype=bool)
    for t in frames:
        mask[t] = draw_mask(pools, height, width, rng)
    return Gaps(ratio, mask, frames)


@dataclass
class CoverStats:
    ratio: float
    series: int = 0
    frames: int = 0
    masked_frames: int = 0
    covers: list[float] = field(default_factory=list)

    def line(self) -> str:
        c = np.array(self.covers) if self.covers else np.zeros(1)
        return (f"ratio {self.ratio:.2f}: {self.masked_frames} of {self.frames} frames masked in {self.series} series; "
                f"cover of a masked frame mean {c.mean():.0%}, min {c.min():.0%}, max {c.max():.0%}")


def simulate(dataset: str | os.PathLike, out: str | os.PathLike, seed: int = 0, ratios: Sequence[float] = (0.5,),
             masks: Sequence[str | os.PathLike] = ()) -> list[CoverStats]:
    """Write ``out``: the series of ``dataset`` with simulated gaps for every ratio. Returns cover statistics."""
    if Path(out).resolve() == Path(dataset).resolve():
        raise DatasetError(f"{out}: is the input dataset; choose another --out (the input stays as it is)")
    for ratio in ratios:
        if not 0 < ratio <= 1:
            raise DatasetError(f"--ratio {ratio} must be in (0, 1]")
    library = load_mask_libraries(masks)
    stats = {r: CoverStats(r) for r in ratios}
    with DatasetFile(dataset) as data:
        if data.kind != "sequences":
            raise DatasetError(f"{dataset}: already simulated; pass the dataset made by `utilise prepare`")
        items = []
        for item in data:
            s = item.series
            own = list(s.library) if s.library is not None else []
            if not own and not library:
                raise DatasetError(f"{dataset}: series {s.name} has no cloudy dates of its own to take masks from; "
                                   "pass --masks (e.g. ../shared/data/eolearn_cloudmasks)")
            t, _, h, w = s.frames.shape
            gaps = {}
            for ratio in ratios:
                g = simulate_gaps(t, h, w, ratio, [own, library], series_rng(seed, s.name, ratio))
                gaps[gaps_key(ratio)] = g
                st = stats[ratio]
                st.series += 1
                st.frames += t
                st.masked_frames += len(g.masked_frames)
                st.covers += [float(g.mask[i].mean()) for i in g.masked_frames]
            items.append(StoredSeries(s, gaps))
        attrs = {"seed": seed, "ratios": list(ratios), "masks": [str(m) for m in masks], "source_dataset": str(dataset)}
        write_dataset(out, items, kind="simulated", attrs=attrs, report=data.report)
    for st in stats.values():
        log.info("%s", st.line())
    return list(stats.values())
