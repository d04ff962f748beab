"""Readers that turn a dataset source on disk into :class:`Series` (unscreened, reflectance 0..1).

One function per format; :data:`READERS` maps the format names of ``utilise prepare`` to them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import xarray as xr

from ..errors import DatasetError, UtiliseError
from ..sentinel2 import DEFAULT_BANDS, DN_PER_REFLECTANCE, S2_13_BANDS, SCL_NODATA, SCL_OCCLUDED
from .series import Series, cloud_classes

log = logging.getLogger(__name__)

def _reflectance(values: np.ndarray) -> np.ndarray:
    """Reflectance to float32 0..1; NaN stays NaN (no data). Values above 1 (bright clouds) are clipped."""
    return np.clip(values.astype(np.float32), 0.0, 1.0)


def _transform_from_centres(x: np.ndarray, y: np.ndarray) -> tuple[float, ...] | None:
    """Affine (a, b, c, d, e, f) of a regular grid given pixel-centre coordinates, or None if irregular."""
    if len(x) < 2 or len(y) < 2:
        return None
    dx, dy = float(np.median(np.diff(x))), float(np.median(np.diff(y)))
    if not (np.allclose(np.diff(x), dx, rtol=1e-3) and np.allclose(np.diff(y), dy, rtol=1e-3)):
        return None
    return (dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2)


def _need(ds: xr.Dataset, names: Sequence[str], path: Path) -> None:
    missing = [n for n in names if n not in ds.variables]
    if missing:
        have = ", ".join(sorted(str(v) for v in ds.data_vars)[:12])
        raise DatasetError(f"{path}: missing variable(s) {', '.join(missing)} (has {have}); "
                           "check the format name or pass --bands")


def open_netcdf(path: Path, decode: bool = True) -> xr.Dataset:
    try:
        return xr.open_dataset(path, mask_and_scale=decode)
    except Exception as err:  # netCDF4 and h5netcdf raise many types
        raise DatasetError(f"{path}: not a readable netCDF file ({type(err).__name__}); "
                           "pass the .nc file of the series") from None


def _dates_of(values: np.ndarray) -> list[dt.date]:
    return [dt.date.fromisoformat(str(np.datetime_as_string(v, unit="D"))) for v in values]


def _scl_classes(scl: np.ndarray, bands_missing: np.ndarray) -> np.ndarray:
    finite = np.isfinite(scl)
    values = np.where(finite, scl, 0)
    return cloud_classes(np.isin(values, SCL_OCCLUDED), np.isin(values, SCL_NODATA) | ~finite | bands_missing)


def read_geotiff(source: Path, bands: Sequence[str] | None = None, read: object = None, **_: object) -> list[Series]:
    """A folder of dated GeoTIFF scenes, decoded exactly as ``utilise fill`` decodes it with the same
    ``read`` options (a cube.ReadOptions; default: its defaults)."""
    # The raster stack (rasterio, rioxarray, dask) is imported only for this format: training on prepared
    # files needs none of it.
    from ..cube import open_folder, read_classes
    from ..options import ReadOptions

    bands = list(bands or DEFAULT_BANDS)
    cube = open_folder(source, bands, read if isinstance(read, ReadOptions) else ReadOptions())
    reflectance, occluded, nodata, _ = read_classes(cube, 0, cube.grid.height)
    crs = cube.grid.crs.to_wkt() if cube.grid.crs else ""
    return [Series(source.name, _reflectance(reflectance), cloud_classes(occluded, nodata), cube.dates,
                   list(bands), str(source), "geotiff", crs, tuple(cube.grid.transform)[:6])]


def read_minicube(source: Path, bands: Sequence[str] | None = None, mask: str = "scl", **_: object) -> list[Series]:
    """An earthnet-minicuber / GreenEarthNet netCDF cube: daily axis, days without an acquisition dropped.

    ``mask``: 'scl' (classes 3, 8, 9, 10 occluded) or 'dlmask' (the cube's cloud mask, nonzero occluded)."""
    ds = open_netcdf(source)
    names = [f"s2_{b}" for b in (bands or ("B02", "B03", "B04", "B8A"))]
    mask_var = {"scl": "s2_SCL", "dlmask": "s2_dlmask"}.get(mask)
    if mask_var is None:
        raise DatasetError(f"--mask {mask!r} is not one of scl, dlmask for minicubes")
    _need(ds, names + [mask_var, "time"], source)
    stack = np.stack([ds[n].values for n in names], axis=1)
    acquired = ~np.isnan(stack).all(axis=(1, 2, 3))
    log.info("%s: %d of %d days hold an acquisition", source.name, acquired.sum(), len(acquired))
    stack, raw_mask = stack[acquired], ds[mask_var].values[acquired]
    missing = np.isnan(stack).any(axis=1)
    if mask == "scl":
        classes = _scl_classes(raw_mask, missing)
    else:
        finite = np.isfinite(raw_mask)
        classes = cloud_classes(np.where(finite, raw_mask, 0) > 0, ~finite | missing)
    lat, lon = ds["lat"].values, ds["lon"].values
    return [Series(source.stem, _reflectance(stack), classes, _dates_of(ds["time"].values[acquired]),
                   [n[3:] for n in names], str(source), "minicube", "EPSG:4326",
                   _transform_from_centres(lon, lat))]


def _crs_of(ds: xr.Dataset, var: str) -> str:
    if var in ds.variables:
        return str(ds[var].attrs.get("crs_wkt") or ds[var].attrs.get("spatial_ref") or "")
    return ""


def read_worldcereal(source: Path, bands: Sequence[str] | None = None, **_: object) -> list[Series]:
    """A WorldCereal location: the 10 m file (B02 B03 B04 B08) with SCL from the 20 m file (2 x 2 upsampled)."""
    if source.is_dir():
        tens = sorted(source.glob("S2_L2A_10m_*.nc"))
        if not tens:
            raise DatasetError(f"{source}: no S2_L2A_10m_*.nc file; pass a WorldCereal location folder")
        ten = tens[0]
    else:
        ten = source
    twenty = ten.with_name(ten.name.replace("_10m_", "_20m_"))
    if not twenty.is_file():
        raise DatasetError(f"{twenty}: missing (the SCL of {ten.name} lives in the matching 20 m file)")
    # SCL is packed with an integer scale and fill value that xarray cannot decode: read it raw (0 = no data).
    ds, ds20 = open_netcdf(ten), open_netcdf(twenty, decode=False)
    names = list(bands or ("B02", "B03", "B04", "B08"))
    _need(ds, names, ten)
    _need(ds20, ["SCL"], twenty)
    stack = np.stack([ds[n].values for n in names], axis=1)
    scl = ds20["SCL"].values.astype(np.float32)
    h, w = stack.shape[-2:]
    fy, fx = h // scl.shape[1], w // scl.shape[2]
    scl = np.repeat(np.repeat(scl, fy, axis=1), fx, axis=2)[:, :h, :w]
    classes = _scl_classes(scl, np.isnan(stack).any(axis=1))
    return [Series(str(ds.attrs.get("location_id", ten.parent.name)), _reflectance(stack), classes,
                   _dates_of(ds["timestamp"].values), names, str(ten), "worldcereal", _crs_of(ds, "spatial_ref"),
                   _transform_from_centres(ds["x"].values, ds["y"].values))]


def read_openeo(source: Path, bands: Sequence[str] | None = None, **_: object) -> list[Series]:
    """An openEO / GFMap netCDF cube: ``S2-L2A-B02`` ... int16 DN (reflectance x 10000) and ``S2-L2A-SCL``."""
    ds = open_netcdf(source)
    names = [f"S2-L2A-{b}" for b in (bands or ("B02", "B03", "B04", "B08"))]
    _need(ds, names + ["S2-L2A-SCL", "t"], source)
    raw = np.stack([ds[n].values for n in names], axis=1).astype(np.float32)
    missing = ~np.isfinite(raw).any(axis=1) | (raw == 0).all(axis=1)
    stack = np.where(missing[:, None], np.nan, raw / DN_PER_REFLECTANCE)
    classes = _scl_classes(ds["S2-L2A-SCL"].values.astype(np.float32), missing)
    return [Series(source.stem, _reflectance(stack), classes, _dates_of(ds["t"].values), [n[7:] for n in names],
                   str(source), "openeo", _crs_of(ds, "crs"), _transform_from_centres(ds["x"].values, ds["y"].values))]


_EN21_NAME = re.compile(r"^(context|target)_(?P<cube>(?P<tile>\d{2}[A-Z]{3})_(?P<start>\d{4}-\d{2}-\d{2})_.+)\.npz$")
EN21_BANDS = ("B02", "B03", "B04", "B8A")


def _earthnet_frames(path: Path) -> np.ndarray:
    try:
        with np.load(path) as data:
            cube = data["highresdynamic"]
    except (OSError, ValueError, KeyError):
        raise DatasetError(f"{path}: not an EarthNet2021 cube (no 'highresdynamic' array)") from None
    if cube.ndim != 4 or cube.shape[2] not in (5, 7):
        raise DatasetError(f"{path}: highresdynamic is {cube.shape}, expected H x W x 5 (test) or 7 (train) x T")
    return cube


def read_earthnet2021(source: Path, **_: object) -> list[Series]:
    """EarthNet2021 ``context_*.npz`` / ``target_*.npz`` cubes (a file or a folder, searched recursively).

    ``highresdynamic`` is H x W x C x T: test split C = 5 (B02 B03 B04 B8A, mask), training split C = 7
    (the same, cloud probability, SCL, mask); the mask is the last channel (1 = cloud, shadow or invalid).
    Frames are 5 days apart from the start date in the name; a target's frame i is start + 5 (10 + i) days.
    """
    files = sorted(source.rglob("*.npz")) if source.is_dir() else [source]
    cubes: dict[str, dict[str, Path]] = {}
    for path in files:
        match = _EN21_NAME.match(path.name)
        if not match:
            if not source.is_dir():
                raise DatasetError(f"{path}: not an EarthNet2021 cube name (context_<cube>.npz or target_<cube>.npz)")
            continue
        cubes.setdefault(match["cube"], {})[match.group(1)] = path
    if not cubes:
        raise DatasetError(f"{source}: no EarthNet2021 cubes (context_*.npz / target_*.npz) found")
    out = []
    for cube_id, parts in sorted(cubes.items()):
        start = dt.date.fromisoformat(_EN21_NAME.match(next(iter(parts.values())).name)["start"])
        arrays, dates = [], []
        for kind, offset in (("context", 0), ("target", 10)):
            if kind in parts:
                cube = _earthnet_frames(parts[kind])
                arrays.append(cube)
                dates += [start + dt.timedelta(days=5 * (offset + i)) for i in range(cube.shape[-1])]
        cube = np.concatenate(arrays, axis=-1).astype(np.float32).transpose(3, 2, 0, 1)  # T x C x H x W
        stack, mask = cube[:, :4], cube[:, -1]
        acquired = ~np.isnan(stack).all(axis=(1, 2, 3))
        stack, mask = stack[acquired], mask[acquired]
        missing = np.isnan(stack).any(axis=1)
        classes = cloud_classes(np.nan_to_num(mask, nan=1.0) > 0, missing)
        first = next(iter(parts.values()))
        out.append(Series(cube_id, _reflectance(stack), classes, [d for d, a in zip(dates, acquired) if a],
                          list(EN21_BANDS), str(first.parent / f"*_{cube_id}.npz"), "earthnet2021"))
    return out


_CRTS_NAME = re.compile(r"^s(?P<sensor>[12])_(?P<roi>[^_]+)_(?P<roi_id>[^_]+)_ImgNo_(?P<t>\d+)_"
                        r"(?P<date>\d{4}-\d{2}-\d{2})_patch_(?P<patch>\d+)(?P<mask>_mask)?\.tif$")


def read_sen12mscrts(source: Path, bands: Sequence[str] | None = None, **_: object) -> list[Series]:
    """SEN12MS-CR-TS: ``<ROI>/<id>/S2/<t>/s2_<ROI>_<id>_ImgNo_<t>_<date>_patch_<p>.tif`` (13 bands, DN),
    ``.../S1/<t>/s1_..._patch_<p>.tif`` (VV, VH in dB) and a cloud mask per S2 patch,
    ``s2_..._patch_<p>_mask.tif`` (1 = cloud or shadow; the dataset ships none, make them with s2cloudless).
    One series per ROI and patch over the time index t; S1 is paired with S2 by t."""
    import rasterio

    wanted = [S2_13_BANDS.index(b) for b in (bands or DEFAULT_BANDS)]
    found: dict[tuple[str, str, str], dict[int, dict[str, Path]]] = {}
    for path in sorted(source.rglob("s[12]_*.tif")):
        match = _CRTS_NAME.match(path.name)
        if match:
            kind = "mask" if match["mask"] else f"s{match['sensor']}"
            key = (match["roi"], match["roi_id"], match["patch"])
            found.setdefault(key, {}).setdefault(int(match["t"]), {})[kind] = path
    if not found:
        raise DatasetError(f"{source}: no SEN12MS-CR-TS patches (S2/<t>/s2_<ROI>_<id>_ImgNo_<t>_<date>_patch_<p>.tif)")
    out = []
    for (roi, roi_id, patch), times in sorted(found.items()):
        frames, classes, dates, sar = [], [], [], []
        crs, transform = "", None
        for t in sorted(times):
            files = times[t]
            if "s2" not in files:
                continue
            if "mask" not in files:
                raise DatasetError(f"{files['s2']}: no cloud mask beside it ({files['s2'].stem}_mask.tif, 1 = cloud); "
                                   "make the masks first, e.g. with s2cloudless")
            with rasterio.open(files["s2"]) as src:
                if src.count != 13:
                    raise DatasetError(f"{files['s2']}: {src.count} bands, SEN12MS-CR-TS S2 patches have 13")
                dn = src.read([i + 1 for i in wanted]).astype(np.float32)
                crs, transform = (src.crs.to_wkt() if src.crs else ""), tuple(src.transform)[:6]
            with rasterio.open(files["mask"]) as src:
                cloud = src.read(1) > 0
            missing = (dn == 0).all(axis=0)
            frames.append(np.where(missing, np.nan, dn / DN_PER_REFLECTANCE))
            classes.append(cloud_classes(cloud, missing))
            dates.append(dt.date.fromisoformat(_CRTS_NAME.match(files["s2"].name)["date"]))
            if "s1" in files:
                with rasterio.open(files["s1"]) as src:
                    sar.append(src.read([1, 2]).astype(np.float32))
            else:
                sar.append(None)
        if not frames:
            continue
        have_sar = all(v is not None for v in sar)
        out.append(Series(f"{roi}_{roi_id}_patch{patch}", _reflectance(np.stack(frames)), np.stack(classes), dates,
                          [S2_13_BANDS[i] for i in wanted], str(source), "sen12mscrts", crs, transform,
                          np.stack(sar) if have_sar else None))
    return out


READERS: dict[str, Callable[..., list[Series]]] = {
    "geotiff": read_geotiff,
    "minicube": read_minicube,
    "worldcereal": read_worldcereal,
    "openeo": read_openeo,
    "earthnet2021": read_earthnet2021,
    "sen12mscrts": read_sen12mscrts,
}


def read_source(fmt: str, source: str | Path, **options: object) -> list[Series]:
    """All series of ``source`` read with the reader of ``fmt`` (see :data:`READERS`)."""
    if fmt not in READERS:
        raise DatasetError(f"unknown format {fmt!r}; choose one of {', '.join(READERS)}")
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source}: does not exist; pass the file or folder of the {fmt} source")
    try:
        return READERS[fmt](source, **options)
    except UtiliseError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"{source}: cannot be read as {fmt} ({err}); check the format name") from None
