"""Frame screening: which frames of a series are clear enough to serve as ground truth.

The paper trains and scores on cloud-free sequences only, so every frame whose mask shows occlusion
above a small tolerance is dropped, and a series with fewer than ``min_frames`` left is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .series import NODATA, OCCLUDED, Series

MIN_LIBRARY_COVER = 0.10  # the paper only superimposes real masks with at least 10 % cover


@dataclass(frozen=True)
class ScreeningRule:
    """max_cover: largest cloud/shadow fraction of a frame's valid pixels that still counts as clear;
    max_nodata: largest no-data fraction of a frame; min_frames: shortest series kept."""

    max_cover: float = 0.01
    max_nodata: float = 0.5
    min_frames: int = 5


@dataclass
class FrameVerdict:
    date: str
    cover: float      # cloud/shadow fraction of the valid pixels, 0..1
    nodata: float     # no-data fraction of all pixels, 0..1
    kept: bool
    reason: str


@dataclass
class SeriesReport:
    name: str
    source: str
    frames: list[FrameVerdict] = field(default_factory=list)
    kept: bool = False
    reason: str = ""
    library_masks: int = 0

    @property
    def kept_frames(self) -> int:
        return sum(f.kept for f in self.frames)


def frame_statistics(cloud_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """T x H x W classes -> (cover, nodata): per frame cloud fraction of valid pixels and no-data fraction."""
    flat = cloud_mask.reshape(cloud_mask.shape[0], -1)
    nodata = (flat == NODATA).mean(axis=1)
    valid = (flat != NODATA).sum(axis=1)
    cover = np.divide((flat == OCCLUDED).sum(axis=1), valid, out=np.ones(len(flat)), where=valid > 0)
    return cover, nodata


def screen(series: Series, rule: ScreeningRule) -> tuple[Series | None, SeriesReport]:
    """Keep the clear frames of ``series``; the dropped frames' cloud masks (with at least 10 % cover)
    become the series' mask library. Returns (kept series or None, report)."""
    cover, nodata = frame_statistics(series.cloud_mask)
    report = SeriesReport(series.name, series.source)
    keep = np.zeros(series.length, dtype=bool)
    for t, date in enumerate(series.dates):
        if nodata[t] > rule.max_nodata:
            reason = f"no data {nodata[t]:.0%} > {rule.max_nodata:.0%}"
        elif cover[t] > rule.max_cover:
            reason = f"cloud/shadow {cover[t]:.1%} > {rule.max_cover:.1%}"
        else:
            keep[t], reason = True, "clear"
        report.frames.append(FrameVerdict(date.isoformat(), float(cover[t]), float(nodata[t]), bool(keep[t]), reason))

    shapes = (~keep) & (cover >= MIN_LIBRARY_COVER) & (nodata <= rule.max_nodata)
    if shapes.any():
        series.library = series.cloud_mask[shapes] == OCCLUDED
        series.library_dates = [d for d, s in zip(series.dates, shapes) if s]
    report.library_masks = int(shapes.sum())
    if keep.sum() < rule.min_frames:
        report.reason = f"{int(keep.sum())} clear frames < {rule.min_frames}"
        return None, report
    report.kept, report.reason = True, f"{int(keep.sum())} of {series.length} frames clear"
    return series.select(keep), report
