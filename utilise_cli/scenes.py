"""Finding the dated scenes, their bands and their cloud masks in a folder.

A folder holds one GeoTIFF per date (multi-band, bands named by their descriptions) or one file per band
per date (``..._B04_...``; or a folder per date, its date in the folder's name), and cloud masks either as
separate files per date (names matching ``mask_pattern``, or any name in a mask folder: a subfolder named as
masks, or one given) or as a band inside each scene (SCL, MSK_CLDPRB, ...); or it holds Sentinel-2 SAFE products,
whose granules' band files are read as one file per band. Nothing is read here but
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
from .sentinel2 import DEFAULT_BANDS, RAW_OFFSET, band_key, baseline_number

log = logging.getLogger(__name__)

RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".vrt"}
# Subfolders read as mask folders: named as masks and nothing else, so that a cloud_free/ or clouds_removed/
# beside the scenes (another tool's outputs) is not taken for one.
MASK_FOLDER = re.compile(r"(?i)(cloud[_\-.]?)?(masks?|clouds?|clm|cld|scl|cldprb|clp|fmask|qa60)$")
# In-scene mask bands, best first, and the kind each one is. PROBABILITY: Earth Engine's s2cloudless band. QA60
# (Earth Engine's S2 collections: bit 10 opaque cloud, 11 cirrus) reads as binary; last, as it may be empty in
# products of 2022-2023.
_MASK_BANDS = {"SCL": "scl", "MSK_CLDPRB": "probability", "CLP": "probability", "CLOUD_PROBABILITY": "probability",
               "PROBABILITY": "probability", "MASK": "binary", "CLOUD_MASK": "binary", "CLM": "binary",
               "FMASK": "fmask", "QA60": "binary"}
_BAND_TOKEN = re.compile(r"(?i)(?<![a-z0-9])B(\d{1,2})(A?)(?![0-9a-z])")
# The layers beside the bands in an L2A granule's IMG_DATA/R10m, R20m, R60m (aerosol, water vapour, true colour)
# and its preview: skipped where a folder holds one file per band, as users copy those folders whole.
_NOT_BANDS = re.compile(r"(?i)(?<![a-z0-9])(AOT|WVP|TCI|PVI)(?![a-z0-9])")
_SAFE = re.compile(r"(?i)^S2[A-D]_MSIL(1C|2A)_.*\.(SAFE|zip)$")  # a product folder or its download
_SAFE_BASELINE = re.compile(r"_(N\d{4})_")
_SAFE_TILE = re.compile(r"_(T\d{2}[A-Z]{3})_")
# A band file of a SAFE granule copied out of its product (T34VCL_20220612T100031_B04_10m.jp2): its DN are raw,
# but without the product's name or metadata its processing baseline, and so its offset, is unknown.
_GRANULE_FILE = re.compile(r"(?i)^T\d{2}[A-Z]{3}_\d{8}T\d{6}_B[0-9]{1,2}A?(_\d{2}m)?\.jp2$")
_RESOLUTION = re.compile(r"(?i)(?<![a-z0-9])(\d{1,3})m(?![a-z0-9])")  # a granule file's "_10m"


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
    offset: float | None = None  # reflectance offset its source states (SAFE baseline, STAC); None: the tags'
    product: str = ""  # the SAFE product it was found in
    folder: str = ""  # the dated folder its files were found in (S2B_34VCL_20210403_0_L2A), if any

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


def _mask_kind_from_name(path: Path, in_mask_folder: bool = False) -> str:
    """A mask file's kind by its name (and the name of the mask folder it lies in: scl/20210403.tif)."""
    name = (f"{path.parent.name}/" if in_mask_folder else "").lower() + path.name.lower()
    if "fmask" in name:
        return "fmask"
    if "scl" in name:
        return "scl"
    if "prob" in name or "cldprb" in name or "clp" in name:
        return "probability"
    return "binary"


def _date_of(path: Path, tags: dict[str, str], date_pattern: str | None, folder_date: dt.date | None = None
             ) -> dt.date:
    """A file's date: from its name, else its dated folder's (``folder_date``), else its tags."""
    date = date_from_name(path.name, date_pattern) or folder_date or date_from_tags(tags)
    if date is None:
        hint = "fix --date-pattern" if date_pattern else "rename it (e.g. 20210403_scene.tif) or pass --date-pattern"
        raise SceneError(f"{path}: no acquisition date in the file name or tags; {hint}")
    return date


def _rasters(folder: Path) -> list[Path]:
    """The raster files right in ``folder`` (not hidden ones), sorted."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and not p.name.startswith("."))


def mask_folders(folder: Path, mask_folder: str | Path | None = None) -> list[Path]:
    """Folders whose rasters are all masks, whatever their own names: ``mask_folder`` where given, else the
    subfolders of ``folder`` named as masks and nothing else (MASK_FOLDER: ``masks/``, ``cloud_masks/``, ``SCL/``;
    not ``cloud_free/``)."""
    if mask_folder is not None:
        if not Path(mask_folder).is_dir():
            raise SceneError(f"{mask_folder}: not a folder; pass --mask-folder the folder that holds the cloud masks")
        return [Path(mask_folder)]
    return [d for d in sorted(folder.iterdir()) if d.is_dir() and MASK_FOLDER.match(d.name)]


def dated_folders(folder: Path, date_pattern: str | None = None) -> dict[Path, dt.date]:
    """The subfolders of ``folder`` that each hold one date's files, with the date their names carry
    (``S2B_34VCL_20210403_0_L2A/B04.tif``: STAC items downloaded a folder each); empty unless every subfolder
    with rasters but the mask folders has a date in its name (a folder of tile folders has none)."""
    found = {d: date_from_name(d.name, date_pattern) for d in sorted(folder.iterdir())
             if d.is_dir() and not d.name.startswith(".") and not MASK_FOLDER.match(d.name) and _rasters(d)}
    return found if found and all(found.values()) else {}  # type: ignore[return-value]


def discover_scenes(folder: str | Path, bands: Sequence[str] = DEFAULT_BANDS,
                    mask_pattern: str = DEFAULT_MASK_PATTERN, date_pattern: str | None = None,
                    mask_kind: str = "auto", mask_band: str | None = None,
                    mask_folder: str | Path | None = None, band_names: Sequence[str] = ()) -> list[Scene]:
    """Scenes of a folder sorted by date, each with the requested ``bands`` and a cloud mask: a mask file beside
    it (named by ``mask_pattern``), in a mask folder (see :func:`mask_folders`), or a band of the scene.
    ``band_names``: the bands of multi-band scenes in file order, where their files do not describe them.

    Raises SceneError (naming the file and the fix) for: no rasters, a file without a date, an unreadable
    file, two scenes on one date, a missing band, a date without a mask.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneError(f"{folder}: not a folder; pass the folder that holds the dated GeoTIFF scenes")
    if mask_kind not in MASK_KINDS:
        raise SceneError(f"--mask-kind {mask_kind!r} is not one of {', '.join(MASK_KINDS)}")
    files = _rasters(folder)
    products: dict[Path, tuple[str, float]] = {}  # of the files inside SAFE products: product name, offset
    dated: dict[Path, dt.date] = {}  # dated folders (one date's files each) and their dates
    if not files:
        products = safe_band_files(folder)
        files = sorted(products)
    if not files:
        dated = dated_folders(folder, date_pattern)
        files = [p for d in dated for p in _rasters(d)]
    if not files and is_safe_product(folder):
        raise SceneError(f"{folder}: one SAFE product (one date); pass the folder that holds the products of every "
                         "date")
    if not files:
        raise SceneError(f"{folder}: no GeoTIFF scenes (*.tif) found; point to a folder with one GeoTIFF per date")
    try:
        mask_re = re.compile(mask_pattern)
    except re.error as err:
        raise SceneError(f"--mask-pattern {mask_pattern!r} is not a valid regular expression ({err})") from None
    wanted = [band_key(b) for b in bands]
    foldered = {p for d in mask_folders(folder, mask_folder) for p in _rasters(d)}

    scene_files: dict[dt.date, list[tuple[Path, int, tuple[str | None, ...]]]] = {}
    mask_files: dict[dt.date, Path] = {}
    for path in [*files, *sorted(foldered)]:
        count, descriptions, tags = _open_header(path)
        date = _date_of(path, tags, date_pattern, dated.get(path.parent))
        if path in foldered or mask_re.search(path.stem):
            if date in mask_files:
                finer = _finer(path, mask_files[date])
                if finer is None:
                    raise SceneError(f"{path} and {mask_files[date]}: two masks for {date}; keep one")
                path = finer
            mask_files[date] = path
        else:
            scene_files.setdefault(date, []).append((path, count, descriptions))

    scenes = []
    named = [band_key(b) for b in band_names]
    bands_by_date = {date: _bands_of(entries, date, wanted, named) for date, entries in scene_files.items()}
    if (mask_kind == "auto" and not mask_files
            and not any(_mask_band(available, mask_band) for available in bands_by_date.values())):
        log.warning("%s: no cloud masks (no mask files, no mask band): the cloud screen alone makes the masks, "
                    "which misses more than a real mask; pass --mask-folder where the masks lie elsewhere, or "
                    "--mask-kind none to say this is meant", folder)
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
            kind = mask_kind if mask_kind != "auto" else _mask_kind_from_name(mask_files[date],
                                                                                mask_files[date] in foldered)
        else:
            found = _mask_band(available, mask_band)
            if found is None:
                raise SceneError(
                    f"{entries[0][0]}: no cloud mask for {date}; add a mask file for that date (a name matching "
                    "--mask-pattern, e.g. 20210403_mask.tif, or in --mask-folder) or a mask band (SCL, MSK_CLDPRB, or "
                    "--mask-band), or pass --mask-kind none to let the cloud screen make every mask")
            name, mask = found
            kind = mask_kind if mask_kind != "auto" else _MASK_BANDS.get(name, "binary")
        product, offset = products.get(entries[0][0], ("", None))
        scenes.append(Scene(date, {b: available[b] for b in wanted}, mask, kind, [e[0] for e in entries],
                            offset=offset, product=product, folder=entries[0][0].parent.name if dated else ""))
        log.debug("scene %s: %s, mask %s (%s)", date, ", ".join(p.name for p, _, _ in entries), mask.path.name, kind)
    for date in sorted(set(mask_files) - set(scene_files)):
        log.warning("skipped %s: a mask for %s but no scene on that date", mask_files[date], date)
    if not scenes:
        raise SceneError(f"{folder}: only mask files found; the scenes themselves are missing")
    return scenes


def is_granule_file(path: Path | str) -> bool:
    """Whether ``path`` is a band file of a SAFE granule by its name, outside its product."""
    return bool(_GRANULE_FILE.match(Path(str(path)).name))


def is_safe_product(path: Path) -> bool:
    """Whether ``path`` is a Sentinel-2 SAFE product by its name (``S2A_MSIL2A_....SAFE``, or zipped)."""
    return bool(_SAFE.search(path.name))


def safe_band_files(folder: Path) -> dict[Path, tuple[str, float]]:
    """The band and mask files of the Sentinel-2 SAFE products in ``folder`` (unzipped ``S2A_MSIL2A_....SAFE``
    folders: GRANULE/*/IMG_DATA/R10m, R20m, R60m for L2A, IMG_DATA itself for L1C), each with its product's name
    and reflectance offset: RAW_OFFSET from processing baseline 04.00 (``_N0400_`` in the name) on, as SAFE DN are
    never harmonised, else 0. Empty where there are none; SceneError for a zipped or an empty product."""
    products = sorted(p for p in folder.iterdir() if is_safe_product(p))
    zipped = [p for p in products if not p.is_dir()]
    if zipped:
        raise SceneError(f"{zipped[0]}: a zipped SAFE product; unzip it beside the others (each .SAFE folder is "
                         "read as it is)")
    tiles = sorted({m.group(1) for m in map(_SAFE_TILE.search, (p.name for p in products)) if m})
    if len(tiles) > 1:
        raise SceneError(f"{folder}: SAFE products of {len(tiles)} tiles ({', '.join(tiles)}); put each tile's "
                         "products in a folder of its own, and fill the folder of those tile folders")
    files: dict[Path, tuple[str, float]] = {}
    for product in products:
        found = [p for p in product.glob("GRANULE/*/IMG_DATA/**/*") if p.suffix.lower() in RASTER_SUFFIXES]
        if not found:
            raise SceneError(f"{product}: no band files under GRANULE/*/IMG_DATA; unzip the product again")
        baseline = _SAFE_BASELINE.search(product.name)
        offset = RAW_OFFSET if baseline and baseline_number(baseline.group(1)) >= 4.0 else 0.0
        files.update((p, (product.name, offset)) for p in found)
    if products:
        log.info("%s: %d SAFE products, %d band and mask files", folder, len(products), len(files))
    return files


def _bands_of(entries: list[tuple[Path, int, tuple[str | None, ...]]], date: dt.date,
              wanted: list[str], band_names: list[str]) -> dict[str, BandRef]:
    """Band name -> location for the files of one date (one multi-band file, or one file per band);
    ``band_names``: a multi-band file's bands in order where its descriptions do not name them (or empty)."""
    if len(entries) == 1:
        path, count, descriptions = entries[0]
        names = [band_key(d) if d else "" for d in descriptions]
        if band_names and count > 1 and not any(names):
            if len(band_names) != count:
                raise SceneError(f"{path}: {count} bands, but --band-names names {len(band_names)}; pass one name "
                                 "per band, in file order")
            names = band_names
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
                             f"pass --band-names with {count} names in file order")
        return {name: BandRef(path, i + 1) for i, name in enumerate(names) if name}
    bands: dict[str, BandRef] = {}
    for path, _, descriptions in entries:
        token = _BAND_TOKEN.search(path.stem)
        if token is None and _NOT_BANDS.search(path.stem):
            log.debug("skipped %s: not a band (aerosol, water vapour or true-colour layer)", path.name)
            continue
        name = band_key(token.group(0)) if token else ""
        finer = _finer(path, Path(bands[name].path)) if name in bands else path
        if token is None or finer is None:
            others = ", ".join(p.name for p, _, _ in entries if p != path)
            raise SceneError(f"{path}: two scenes on the same date {date} (also {others}); keep one, or name "
                             "single-band files by band (..._B04_...)")
        bands[name] = BandRef(finer, 1)
    return bands


def _finer(path: Path, other: Path) -> Path | None:
    """Of two files of one band (or mask) and date, the one of finer resolution by its name (``..._B02_10m`` over
    ``..._B02_20m``, as a granule's R10m and R20m folders hold them); None where the names do not tell."""
    found = [_RESOLUTION.search(p.stem) for p in (path, other)]
    if None in found or found[0].group(1) == found[1].group(1):
        return None
    finer = path if int(found[0].group(1)) < int(found[1].group(1)) else other
    log.debug("taking %s over %s (finer)", finer.name, (other if finer == path else path).name)
    return finer


def _mask_band(available: dict[str, BandRef], requested: str | None) -> tuple[str, BandRef] | None:
    if requested:
        key = band_key(requested)
        return (key, available[key]) if key in available else None
    for name in _MASK_BANDS:
        if name in available:
            return name, available[name]
    return None
