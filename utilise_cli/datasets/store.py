"""The dataset file: HDF5, one group per series (layout in docs/DATASET_FORMAT.md).

Files are written under a hidden temporary name and renamed when complete, so a failed run never
leaves a half-written dataset. Nothing time-dependent is stored, so equal inputs give equal bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import h5py
import numpy as np

from .. import __version__
from ..atomic import staged
from ..errors import DatasetError, OutputError
from .series import Series

FORMAT_NAME = "utilise-sequences"
FORMAT_VERSION = 1
_COMPRESS = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


@dataclass
class Gaps:
    """Simulated gaps of one series at one masking ratio.

    mask: T x H x W bool (True = pixel hidden by a superimposed real cloud mask);
    masked_frames: indices of the frames that received a mask (never 0)."""

    ratio: float
    mask: np.ndarray
    masked_frames: np.ndarray


@dataclass
class StoredSeries:
    series: Series
    gaps: dict[str, Gaps] = field(default_factory=dict)


def _dates_array(dates: Iterable[dt.date]) -> np.ndarray:
    return np.array([d.isoformat().encode() for d in dates], dtype="S10")


def _dates_list(values: np.ndarray) -> list[dt.date]:
    return [dt.date.fromisoformat(v.decode()) for v in values]


def _dataset(group: h5py.Group, name: str, data: np.ndarray, chunk_frames: bool = True) -> None:
    options: dict[str, Any] = dict(_COMPRESS) if data.ndim >= 3 and data.size else {}
    if options and chunk_frames:
        options["chunks"] = (1,) + data.shape[1:]
    group.create_dataset(name, data=data, track_times=False, **options)


def gaps_key(ratio: float) -> str:
    return f"ratio_{ratio:.2f}"


def write_dataset(path: str | os.PathLike, items: Iterable[StoredSeries], kind: str,
                  attrs: dict[str, Any] | None = None, report: dict[str, Any] | None = None) -> Path:
    """Write series (and their gaps when ``kind == 'simulated'``) to ``path`` atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(f"{path.parent}: folder does not exist; create it or choose another --out")
    try:
        with staged(path) as tmp, h5py.File(tmp, "w", track_order=True) as h5:
            h5.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind,
                             "utilise_version": __version__})
            for key, value in (attrs or {}).items():
                h5.attrs[key] = json.dumps(value)
            if report is not None:
                h5.attrs["report"] = json.dumps(report)
            root = h5.create_group("sequences", track_order=True)
            count = 0
            for item in items:
                _write_series(root.create_group(item.series.name, track_order=True), item)
                count += 1
            if count == 0:
                raise DatasetError(f"{path}: nothing to write (no series)")
    except OSError as err:
        raise OutputError(f"{path}: cannot write the dataset ({err.strerror or err}); check the path and free space") from None
    return path


def _write_series(group: h5py.Group, item: StoredSeries) -> None:
    s = item.series
    _dataset(group, "frames", s.frames.astype(np.float32))
    _dataset(group, "cloud_mask", s.cloud_mask.astype(np.uint8))
    group.create_dataset("dates", data=_dates_array(s.dates), track_times=False)
    if s.sar is not None:
        _dataset(group, "sar", s.sar.astype(np.float32))
    if s.library is not None and len(s.library):
        _dataset(group, "library", s.library.astype(np.uint8))
        group.create_dataset("library_dates", data=_dates_array(s.library_dates), track_times=False)
    group.attrs.update({"bands": json.dumps(s.bands), "source": s.source, "source_format": s.source_format,
                        "crs": s.crs})
    if s.transform is not None:
        group.attrs["transform"] = np.asarray(s.transform, dtype=np.float64)
    if item.gaps:
        gaps_group = group.create_group("gaps", track_order=True)
        for key, gaps in item.gaps.items():
            g = gaps_group.create_group(key)
            g.attrs["ratio"] = gaps.ratio
            _dataset(g, "mask", gaps.mask.astype(np.uint8))
            g.create_dataset("masked_frames", data=np.asarray(gaps.masked_frames, dtype=np.int32), track_times=False)


class DatasetFile:
    """Read access to a dataset file (``kind`` 'sequences' from prepare, 'simulated' from simulate)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such dataset file; make one with `utilise prepare`")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError:
            raise DatasetError(f"{self.path}: not an HDF5 file; pass a dataset made by `utilise prepare` or "
                               "`utilise simulate`") from None
        if self._h5.attrs.get("format") != FORMAT_NAME or "sequences" not in self._h5:
            self._h5.close()
            raise DatasetError(f"{self.path}: an HDF5 file but not a utilise dataset; make one with `utilise prepare`")
        self.kind = str(self._h5.attrs.get("kind", "sequences"))

    def __enter__(self) -> "DatasetFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    @property
    def names(self) -> list[str]:
        return list(self._h5["sequences"].keys())

    def attr(self, key: str, default: Any = None) -> Any:
        value = self._h5.attrs.get(key)
        return default if value is None else json.loads(value)

    @property
    def report(self) -> dict[str, Any] | None:
        return self.attr("report")

    @property
    def ratios(self) -> list[str]:
        keys: set[str] = set()
        for name in self.names:
            group = self._h5["sequences"][name]
            if "gaps" in group:
                keys.update(group["gaps"].keys())
        return sorted(keys)

    def read(self, name: str) -> StoredSeries:
        group = self._h5["sequences"][name]
        attrs = group.attrs
        transform = tuple(float(v) for v in attrs["transform"]) if "transform" in attrs else None
        series = Series(
            name=name,
            frames=group["frames"][()],
            cloud_mask=group["cloud_mask"][()],
            dates=_dates_list(group["dates"][()]),
            bands=json.loads(attrs["bands"]),
            source=str(attrs["source"]),
            source_format=str(attrs["source_format"]),
            crs=str(attrs.get("crs", "")),
            transform=transform,
            sar=group["sar"][()] if "sar" in group else None,
            library=group["library"][()].astype(bool) if "library" in group else None,
            library_dates=_dates_list(group["library_dates"][()]) if "library_dates" in group else [],
        )
        gaps = {}
        if "gaps" in group:
            for key, g in group["gaps"].items():
                gaps[key] = Gaps(float(g.attrs["ratio"]), g["mask"][()].astype(bool), g["masked_frames"][()])
        return StoredSeries(series, gaps)

    def __iter__(self) -> Iterator[StoredSeries]:
        for name in self.names:
            yield self.read(name)
