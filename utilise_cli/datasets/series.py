"""One image time series in memory, as every dataset reader returns it and the dataset file stores it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from ..dates import day_positions

# Classes of ``Series.cloud_mask``.
CLEAR, OCCLUDED, NODATA = 0, 1, 2


@dataclass
class Series:
    """A dated image series on one grid.

    frames: T x C x H x W float32 reflectance 0..1 (NaN where there is no data);
    cloud_mask: T x H x W uint8 (0 clear, 1 cloud or shadow, 2 no data);
    dates: T acquisition dates, increasing; bands: C names;
    sar: optional T x 2 x H x W float32 (Sentinel-1 VV, VH in dB) paired with the optical dates;
    library: N x H x W bool real cloud masks from screened-out dates of the same place, for gap simulation.
    """

    name: str
    frames: np.ndarray
    cloud_mask: np.ndarray
    dates: list[dt.date]
    bands: list[str]
    source: str
    source_format: str
    crs: str = ""
    transform: tuple[float, ...] | None = None
    sar: np.ndarray | None = None
    library: np.ndarray | None = None
    library_dates: list[dt.date] = field(default_factory=list)

    def __post_init__(self) -> None:
        t, _, h, w = self.frames.shape
        if self.cloud_mask.shape != (t, h, w):
            raise ValueError(f"cloud_mask {self.cloud_mask.shape} does not fit frames {self.frames.shape}")
        if len(self.dates) != t:
            raise ValueError(f"{len(self.dates)} dates for {t} frames")
        if self.sar is not None and self.sar.shape[0] != t:
            raise ValueError("sar must have one frame per optical date")

    @property
    def length(self) -> int:
        return int(self.frames.shape[0])

    @property
    def days(self) -> np.ndarray:
        """T network positions: days since 1 January of the first date's year."""
        return np.asarray(day_positions(self.dates), dtype=np.float32)

    def select(self, keep: np.ndarray) -> "Series":
        """The series restricted to frames ``keep`` (indices or a boolean mask over T)."""
        keep = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return Series(self.name, self.frames[keep], self.cloud_mask[keep], [self.dates[i] for i in keep],
                      list(self.bands), self.source, self.source_format, self.crs, self.transform,
                      None if self.sar is None else self.sar[keep], self.library, list(self.library_dates))


def cloud_classes(occluded: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """Boolean occluded and nodata masks (same shape) -> uint8 classes CLEAR / OCCLUDED / NODATA."""
    classes = np.where(occluded, OCCLUDED, CLEAR).astype(np.uint8)
    classes[nodata] = NODATA
    return classes
