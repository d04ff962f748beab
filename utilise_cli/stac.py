"""STAC input: a saved search result (ItemCollection), a Catalog or a Collection JSON -> the same lazy
:class:`~utilise_cli.cube.SceneCube` that a folder gives, loaded with odc-stac onto one grid.

Items give the date, the band assets (Earth Search's common names ``blue/green/red/nir``, Planetary Computer's
``B02`` ..., eo:bands names, or ``--asset B04=NAME``), the cloud mask asset (``scl``, a cloud probability, or ``--mask-band``) and the
processing-baseline offset (:func:`item_offset`). Items of one solar day are mosaicked into one date.
Nothing but JSON and (for the default grid) one file header is read here; pixels are read by ``cube.read_rows``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np
import rasterio
import xarray as xr
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from .cube import Grid, MaskRule, SceneCube, boxes_meet, describe_decoding, scene_decoding, with_screen
from .errors import SceneError, first_line
from .options import ReadOptions, StacOptions
from .scenes import BandRef, Scene
from .sentinel2 import COMMON_NAMES, DN_SCALE, RAW_OFFSET, band_key, baseline_number

log = logging.getLogger(__name__)

# Mask assets, best first, and their kind.
MASK_ASSETS = {"scl": "scl", "msk_cldprb": "probability", "cloud_probability": "probability", "cld": "probability",
               "cloud_mask": "binary", "mask": "binary"}
# GDAL settings for reading COGs over HTTP: no directory listing per file, retries, one multi-range request.
REMOTE_GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MAX_RETRY": "5",
                   "GDAL_HTTP_RETRY_DELAY": "1", "GDAL_HTTP_MULTIRANGE": "YES", "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
                   "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.jp2,.vrt", "VSI_CACHE": "TRUE"}


def is_stac(source: str | Path) -> bool:
    """Whether ``source`` names a STAC JSON file (ItemCollection, Catalog, Collection or one Item)."""
    path = Path(source)
    return path.suffix.lower() in (".json", ".geojson") and path.is_file()


def read_items(path: str | Path) -> list:
    """The pystac Items of a STAC JSON file, asset hrefs made absolute. Raises SceneError naming the file."""
    import pystac

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SceneError(f"{path}: not a readable STAC JSON file ({first_line(err, path)}); pass the file "
                         "that ItemSearch.item_collection().save_object() writes, or a folder of scenes") from None
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(data, preserve_dict=False))
        elif kind == "Feature":
            items = [pystac.Item.from_dict(data)]
        elif kind in ("Catalog", "Collection"):
            items = list(pystac.read_file(str(path.resolve())).get_items(recursive=True))
        else:
            raise SceneError(f"{path}: JSON of type {kind!r}, not a STAC ItemCollection, Catalog, Collection or "
                             "Item; pass a saved search result or a folder of scenes")
    except (pystac.STACError, KeyError, TypeError, ValueError) as err:
        raise SceneError(f"{path}: not valid STAC ({first_line(err, path)}); check the file") from None
    if not items:
        raise SceneError(f"{path}: no items in it; run the search again with a wider area or time range")
    for item in items:
        for asset in item.assets.values():
            asset.href = _absolute(asset.get_absolute_href() or asset.href, path.parent)
    return items


# GDAL's virtual file system for each remote scheme an asset href may have.
VSI_PREFIX = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}


def _absolute(href: str, base: Path) -> str:
    """A local href made absolute (relative ones are relative to the JSON file); remote ones as they are."""
    if href.startswith("file://"):
        return href[len("file://"):]
    return href if is_remote(href) else str((base / href).resolve())


def is_remote(href: str) -> bool:
    return urlparse(href).scheme in VSI_PREFIX or href.startswith("/vsi")


@dataclass(frozen=True)
class AssetChoice:
    """Which asset of the items holds each band and the mask."""

    bands: dict[str, str]  # band key (B2 ...) -> asset key
    mask: str
    mask_kind: str


def _asset_keys(item: Any, band: str) -> list[str]:
    """Asset keys of ``item`` that hold ``band``: by key (B04, b4, blue ...) or by eo:bands name."""
    keys = []
    for key, asset in item.assets.items():
        names = {key, *(b.get("name", "") for b in asset.extra_fields.get("eo:bands", [])),
                 *(b.get("common_name", "") for b in asset.extra_fields.get("eo:bands", []))}
        if any(n and (band_key(n) == band or n.lower() == COMMON_NAMES.get(band)) for n in names):
            keys.append(key)
    return keys


def choose_assets(items: Sequence, bands: Sequence[str], stac: StacOptions, read: ReadOptions,
                  source: Path) -> AssetChoice:
    """The band and mask assets, the same for every item; SceneError names the item and the fix."""
    explicit = dict(pair.split("=", 1) for pair in stac.assets)
    explicit = {band_key(k): v for k, v in explicit.items()}
    first = items[0]
    chosen: dict[str, str] = {}
    for band in bands:
        key = explicit.get(band) or next(iter(_asset_keys(first, band)), None)
        if key is None or key not in first.assets:
            have = ", ".join(sorted(first.assets)) or "no assets"
            raise SceneError(f"{source}: item {first.id} has no asset for band {band} (assets: {have}); pass "
                             f"--asset {band}=NAME")
        if key in chosen.values():
            raise SceneError(f"{source}: asset {key} of item {first.id} holds several bands; utilise reads one band "
                             "per asset: pass --asset BAND=NAME for single-band assets")
        chosen[band] = key
    mask = read.mask_band or next((k for k in first.assets if k.lower() in MASK_ASSETS), None)
    if mask is None or mask not in first.assets:
        raise SceneError(f"{source}: item {first.id} has no cloud mask asset (scl, cloud probability); pass "
                         "--mask-band NAME for the asset that holds it")
    kind = read.mask_kind if read.mask_kind != "auto" else MASK_ASSETS.get(mask.lower(), "binary")
    for item in items[1:]:
        missing = [k for k in [*chosen.values(), mask] if k not in item.assets]
        if missing:
            raise SceneError(f"{source}: item {item.id} has no asset {', '.join(missing)} (item {first.id} has); "
                             "remove that item or pass --asset BAND=NAME that all items have")
    return AssetChoice(chosen, mask, kind)


def item_offset(item: Any, asset_key: str) -> float | None:
    """Reflectance offset of an item's DN from its metadata, or None where the item does not say.

    Earth Search: ``earthsearch:boa_offset_applied`` true = harmonised (0), false with processing baseline
    >= 04.00 = raw DN (-0.1). Elsewhere the raster extension's offset when the asset states a DN scale, else the
    processing baseline (``s2:processing_baseline``): raw DN carry +1000 from 04.00 on.
    """
    props = item.properties
    baseline = props.get("s2:processing_baseline") or props.get("sentinel:processing_baseline")
    raw_from_baseline = baseline is not None and baseline_number(baseline) >= 4.0
    applied = props.get("earthsearch:boa_offset_applied", props.get("sentinel:boa_offset_applied"))
    if applied is not None:
        return 0.0 if applied else (RAW_OFFSET if raw_from_baseline else 0.0)
    raster = item.assets[asset_key].extra_fields.get("raster:bands") or [{}]
    if abs(float(raster[0].get("scale", 1.0)) - DN_SCALE) < 1e-9:
        return float(raster[0].get("offset", 0.0))
    if baseline is not None:
        return RAW_OFFSET if raw_from_baseline else 0.0
    return None


def _item_crs(item: Any, asset_key: str) -> CRS | None:
    fields = {**item.properties, **item.assets[asset_key].extra_fields}
    code = fields.get("proj:code") or (f"EPSG:{fields['proj:epsg']}" if fields.get("proj:epsg") else None)
    if code:
        return CRS.from_user_input(code)
    wkt = fields.get("proj:wkt2")
    return CRS.from_wkt(wkt) if wkt else None


def _open_header(href: str, source: Path, item_id: str) -> rasterio.DatasetReader:
    try:
        return rasterio.open(href)
    except (RasterioIOError, OSError) as err:
        raise SceneError(f"{source}: asset {href} of item {item_id} cannot be opened "
                         f"({first_line(err, href)}); check the path or URL, or remove the item") from None


def _check_local_assets(items: Sequence, keys: Sequence[str], source: Path) -> None:
    """Open the header of every local asset, so that a missing or broken file stops the run before any output."""
    for item in items:
        for key in keys:
            href = item.assets[key].href
            if not is_remote(href):
                _open_header(href, source, item.id).close()


def target_grid(items: Sequence, choice: AssetChoice, stac: StacOptions, source: Path) -> dict[str, Any]:
    """odc-stac keyword arguments for the output grid: the first item's first band grid by default; --crs,
    --resolution and --bbox (lon/lat) change it. SceneError for items in several CRS without --crs."""
    from odc.geo.geobox import GeoBox

    first_band = next(iter(choice.bands.values()))
    crs_of = {item.id: _item_crs(item, first_band) for item in items}
    if stac.crs is None and None not in crs_of.values() and len({c.to_string() for c in crs_of.values()}) > 1:
        found = sorted({c.to_string() for c in crs_of.values()})
        raise SceneError(f"{source}: items in {len(found)} CRS ({', '.join(found)}); pass --crs (e.g. --crs "
                         f"{found[0]}) and --resolution to put them on one grid")
    with _open_header(items[0].assets[first_band].href, source, items[0].id) as src:
        native = GeoBox((src.height, src.width), src.transform, src.crs.to_wkt())
        native_resolution = abs(src.transform.a)
    if stac.crs is None and stac.resolution is None and stac.bbox is None:
        return {"geobox": native}
    footprints = [item.bbox for item in items if item.bbox]  # lon/lat; items without one are not judged
    if stac.bbox is not None and footprints and not any(boxes_meet(stac.bbox, box) for box in footprints):
        raise SceneError(f"{source}: --bbox {','.join(f'{v:g}' for v in stac.bbox)} (lon/lat) meets no item's "
                         f"footprint (together {','.join(f'{v:.5g}' for v in _items_bbox(items))}); pass a box "
                         "within them")
    return {"crs": stac.crs or native.crs, "resolution": stac.resolution or native_resolution,
            "bbox": stac.bbox or _items_bbox(items)}


def _items_bbox(items: Sequence) -> tuple[float, float, float, float]:
    boxes = np.array([item.bbox for item in items if item.bbox])
    return (float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max()))


def _solar_date(item: Any) -> dt.date:
    """The local solar date of an item (UTC time shifted by its longitude), as odc-stac groups them."""
    when = item.datetime or dt.datetime.fromisoformat(item.properties["start_datetime"].replace("Z", "+00:00"))
    longitude = (item.bbox[0] + item.bbox[2]) / 2 if item.bbox else 0.0
    return (when + dt.timedelta(hours=longitude / 15)).date()


def open_stac(source: str | Path, bands: Sequence[str], read: ReadOptions = ReadOptions(),
              stac: StacOptions = StacOptions(), chunk_rows: int = 512) -> SceneCube:
    """The lazy cube of a STAC JSON file's items on one grid (see the module docstring)."""
    from odc.stac import configure_rio, load

    source = Path(source)
    items = read_items(source)
    choice = choose_assets(items, bands, stac, read, source)
    keys = [*choice.bands.values(), choice.mask]
    _check_local_assets(items, keys, source)
    if any(is_remote(item.assets[k].href) for item in items for k in keys):
        configure_rio(cloud_defaults=True, **REMOTE_GDAL_ENV)
    # Where odc-stac warps an asset into an array, rasterio warns "Dataset has no geotransform" about the array's
    # own in-memory dataset before it sets its transform: harmless (the output is right; odc-geo issue 131), but
    # users would read it as a fault in their scenes. Only that warning, only from rasterio's reproject.
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\.warp")
    grid_args = target_grid(items, choice, stac, source)
    resampling = {**{key: "bilinear" for key in choice.bands.values()}, choice.mask: "nearest"}
    width = grid_args["geobox"].width if "geobox" in grid_args else None
    chunks = {"y": chunk_rows, "x": width} if width else {"y": chunk_rows}
    try:
        ds = load(items, bands=keys, groupby="solar_day", chunks=chunks, resampling=resampling,
                  fail_on_error=True, **grid_args)
    except (ValueError, RasterioIOError) as err:
        raise SceneError(f"{source}: odc-stac cannot put the items on one grid ({first_line(err)}); "
                         "pass --crs and --resolution, or --bbox") from None
    by_date: dict[dt.date, list] = {}
    for item in sorted(items, key=lambda i: i.datetime or dt.datetime.min.replace(tzinfo=dt.timezone.utc)):
        by_date.setdefault(_solar_date(item), []).append(item)
    dates = [dt.date.fromisoformat(str(t)[:10]) for t in ds.time.values]
    if sorted(by_date) != dates:
        by_date = {d: group for d, group in zip(dates, by_date.values())}
    scenes = [_scene(date, by_date[date], choice, read) for date in dates]
    reflectance = xr.concat([ds[k] for k in choice.bands.values()], dim="band").assign_coords(band=list(choice.bands))
    reflectance = reflectance.transpose("time", "band", "y", "x").drop_vars("spatial_ref", errors="ignore")
    mask = ds[choice.mask].transpose("time", "y", "x").drop_vars("spatial_ref", errors="ignore")
    geobox = ds.odc.geobox
    grid = Grid(CRS.from_wkt(geobox.crs.to_wkt()), geobox.transform, geobox.width, geobox.height)
    reflectance = reflectance.rio.write_crs(grid.crs).rio.write_transform(grid.transform)
    rule = MaskRule(choice.mask_kind, read.cloud_threshold, read.scl_classes, read.mask_buffer)
    scales, offsets = scene_decoding(scenes, read)
    nodata = read.nodata
    if nodata is None:
        raster = items[0].assets[next(iter(choice.bands.values()))].extra_fields.get("raster:bands") or [{}]
        nodata = float(raster[0].get("nodata", 0.0) or 0.0)
    origin = (f"{len(items)} STAC items on {len(dates)} dates; assets "
              f"{', '.join(f'{b}={k}' for b, k in choice.bands.items())}, mask {choice.mask} ({choice.mask_kind}); "
              f"{describe_decoding(dates, scales, offsets)}")
    log.info("%s: %s", source.name, origin)
    return with_screen(SceneCube(reflectance, mask, scenes, grid, [rule] * len(scenes), scales, offsets,
                                 (nodata,) * len(scenes), origin),
                       read.screen)


def _scene(date: dt.date, items: list, choice: AssetChoice, read: ReadOptions) -> Scene:
    """The date's scene: the first item's assets, every item's local files, and the offset the items state."""
    first = items[0]
    first_band = next(iter(choice.bands.values()))
    said = {item_offset(item, first_band) for item in items} - {None}
    if read.offset is None and len(said) > 1:
        log.warning("the items of %s mix harmonised and raw DN (processing baselines before and after 04.00); "
                    "reading that date with its first item's offset", date)
    local = [Path(item.assets[k].href) for item in items for k in [*choice.bands.values(), choice.mask]
             if not is_remote(item.assets[k].href)]
    bands = {b: BandRef(_ref_path(first.assets[k].href), 1) for b, k in choice.bands.items()}
    mask = BandRef(_ref_path(first.assets[choice.mask].href), 1)
    return Scene(date, bands, mask, choice.mask_kind, local, items=[item.id for item in items],
                 offset=item_offset(first, first_band))


def _ref_path(href: str) -> Path | str:
    """A local asset's path; a remote one as GDAL's virtual path (/vsicurl/ and friends), which rasterio opens."""
    if not is_remote(href):
        return Path(href)
    if href.startswith("/vsi"):
        return href
    scheme = urlparse(href).scheme
    return VSI_PREFIX[scheme] + (href if scheme.startswith("http") else href.split("://", 1)[1])
