"""Finding the dated scenes, their bands and their cloud masks in a folder.

A folder holds one GeoTIFF per date (multi-band, bands named by their descriptions) or one file per band
per date (``..._B04_...``), and cloud masks either as separate files per date (names matching
``mask_pattern``) or as a band inside each scene (SCL, MSK_CLDPRB, ...). Nothing is read here but
headers; pixels are read lazily by :mod:`utilise_cli.cube`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import rasterio
from rasterio.errors import RasterioIOError

from .dates import date_from_name, date_from_tags
from .errors import SceneError, first_line
from .options import DEFAULT_MASK_PATTERN, MASK_KINDS
from .sentinel2 import DEFAULT_BANDS, band_key

log = logging.getLogger(__name__)

RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".vrt"}
# In-scene mask bands, best first, and the kind each one is.
_MASK_BANDS = {"SCL": "scl", "MSK_CLDPRB": "probability", "CLP": "probability", "CLOUD_PROBABILITY": "probability",
               "MASK": "binary", "CLOUD_MASK": "binary", "CLM": "binary"}
_BAND_TOKEN = re.compile(r"(?i)(?<![a-z0-9])B(\d{1,2})(A?)(?![0-9a-z])")


@dataclass(frozen=True)
class BandRef:
    """One raster band: file (or, for a remote STAC asset, GDAL's /vsicurl/... path) and 1-based band index."""

    path: Path | str
    index: int


@dataclass
class Scene:
    """One acquisition date: where each requested band and the cloud mask live."""

    date: dt.date
    bands: dict[str, BandRef]
    mask: BandRef
    mask_kind: str
    files: list[Path] = field(default_factory=list)  # the local files it is read from
    items: list[str] = field(default_factory=list)  # STAC input: the ids of the items mosaicked into this date

    @property
    def path(self) -> Path | str:
        """The file that names this scene in messages (the first band's file)."""
        return next(iter(self.bands.values())).path


def _open_header(path: Path) -> tuple[int, tuple[str | None, ...], dict[str, str]]:
    try:
        with rasterio.open(path) as src:
            return src.count, src.descriptions, src.tags()
    except (RasterioIOError, OSError) as err:
        raise SceneError(f"{path}: not a readable raster ({first_line(err, path)}); remove or replace it") from None


def _mask_kind_from_name(path: Path) -> str:
    name = path.name.lower()
    if "scl" in name:
        return "scl"
    if "prob" in name or "cldprb" in name or "clp" in name:
        return "probability"
    return "binary"


def _date_of(path: Path, tags: dict[str, str], date_pattern: str | None) -> dt.date:
    date = date_from_name(path.name, date_pattern) or date_from_tags(tags)
    if date is None:
        hint = "fix --date-pattern" if date_pattern else "rename it (e.g. 20210403_scene.tif) or pass --date-pattern"
        raise SceneError(f"{path}: no acquisition date in the file name or tags; {hint}")
    return date


def discover_scenes(folder: str | Path, bands: Sequence[str] = DEFAULT_BANDS,
                    mask_pattern: str = DEFAULT_MASK_PATTERN, date_pattern: str | None = None,
                    mask_kind: str = "auto", mask_band: str | None = None) -> list[Scene]:
    """Scenes of a folder sorted by date, each with the requested ``bands`` and a cloud mask.

    Raises SceneError (naming the file and the fix) for: no rasters, a file without a date, an unreadable
    file, two scenes on one date, a missing band, a date without a mask.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneError(f"{folder}: not a folder; pass the folder that holds the dated GeoTIFF scenes")
    if mask_kind not in MASK_KINDS:
        raise SceneError(f"--mask-kind {mask_kind!r} is not one of {', '.join(MASK_KINDS)}")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise SceneError(f"{folder}: no GeoTIFF scenes (*.tif) found; point to a folder with one GeoTIFF per date")
    try:
        mask_re = re.compile(mask_pattern)
    except re.error as err:
        raise SceneError(f"--mask-pattern {mask_pattern!r} is not a valid regular expression ({err})") from None
    wanted = [band_key(b) for b in bands]

    scene_files: dict[dt.date, list[tuple[Path, int, tuple[str | None, ...]]]] = {}
    mask_files: dict[dt.date, Path] = {}
    for path in files:
        count, descriptions, tags = _open_header(path)
        date = _date_of(path, tags, date_pattern)
        if mask_re.search(path.stem):
            if date in mask_files:
                raise SceneError(f"{path} and {mask_files[date]}: two masks for {date}; keep one")
            mask_files[date] = path
        else:
            scene_files.setdefault(date, []).append((path, count, descriptions))

    scenes = []
    bands_by_date = {date: _bands_of(entries, date, wanted) for date, entries in scene_files.items()}
    if (mask_kind == "auto" and not mask_files
            and not any(_mask_band(available, mask_band) for available in bands_by_date.values())):
        log.warning("%s: no cloud masks (no mask files, no mask band): the cloud screen alone makes the masks, "
                    "which misses more than a real mask; pass --mask-kind none to say this is meant", folder)
        mask_kind = "none"
    for date in sorted(scene_files):
        entries = scene_files[date]
        available = bands_by_date[date]
        missing = [b for b in wanted if b not in available]
        if missing:
            have = ", ".join(sorted(available)) or "no named bands"
            raise SceneError(f"{entries[0][0]}: has no band {', '.join(missing)} ({have}); "
                             "pass --bands with the names the scenes have")
        if mask_kind == "none":
            mask, kind = available[wanted[0]], "none"  # not read: the screen makes the masks
        elif date in mask_files:
            mask = BandRef(mask_files[date], 1)
            kind = mask_kind if mask_kind != "auto" else _mask_kind_from_name(mask_files[date])
        else:
            found = _mask_band(available, mask_band)
            if found is None:
                raise SceneError(
                    f"{entries[0][0]}: no cloud mask for {date}; add a mask file for that date (a name matching "
                    "--mask-pattern, e.g. 20210403_mask.tif) or a mask band (SCL, MSK_CLDPRB, or --mask-band), or "
                    "pass --mask-kind none to let the cloud screen make every mask")
            name, mask = found
            kind = mask_kind if mask_kind != "auto" else _MASK_BANDS.get(name, "binary")
        scenes.append(Scene(date, {b: available[b] for b in wanted}, mask, kind, [e[0] for e in entries]))
        log.debug("scene %s: %s, mask %s (%s)", date, ", ".join(p.name for p, _, _ in entries), mask.path.name, kind)
    for date in sorted(set(mask_files) - set(scene_files)):
        log.warning("skipped %s: a mask for %s but no scene on that date", mask_files[date], date)
    if not scenes:
        raise SceneError(f"{folder}: only mask files found; the scenes themselves are missing")
    return scenes


def _bands_of(entries: list[tuple[Path, int, tuple[str | None, ...]]], date: dt.date,
              wanted: list[str]) -> dict[str, BandRef]:
    """Band name -> location for the files of one date (one multi-band file, or one file per band)."""
    if len(entries) == 1:
        path, count, descriptions = entries[0]
        names = [band_key(d) if d else "" for d in descriptions]
        if not any(names):
            token = _BAND_TOKEN.search(path.stem)
            if count == 1 and token:
                return {band_key(token.group(0)): BandRef(path, 1)}
            if count == len(wanted) or count == len(wanted) + 1:
                log.info("%s has no band descriptions: taking bands 1..%d as %s", path.name, len(wanted), wanted)
                named = {b: BandRef(path, i + 1) for i, b in enumerate(wanted)}
                if count == len(wanted) + 1:
                    named["MASK"] = BandRef(path, count)
                return named
            raise SceneError(f"{path}: {count} bands without descriptions; name them (B2, B3, ...) or "
                             f"pass --bands with {count} names in file order")
        return {name: BandRef(path, i + 1) for i, name in enumerate(names) if name}
    bands: dict[str, BandRef] = {}
    for path, _, descriptions in entries:
        token = _BAND_TOKEN.search(path.stem)
        if token is None or band_key(token.group(0)) in bands:
            others = ", ".join(p.name for p, _, _ in entries if p != path)
            raise SceneError(f"{path}: two scenes on the same date {date} (also {others}); keep one, or name "
                             "single-band files by band (..._B04_...)")
        bands[band_key(token.group(0))] = BandRef(path, 1)
    return bands


def _mask_band(available: dict[str, BandRef], requested: str | None) -> tuple[str, BandRef] | None:
    if requested:
        key = band_key(requested)
        return (key, available[key]) if key in available else None
    for name in _MASK_BANDS:
        if name in available:
            return name, available[name]
    return None
