"""The scene cube: every date's bands and cloud mask on one grid, opened lazily with rioxarray + dask.

``reflectance`` is (time, band, y, x) in raw file values (DN); ``mask`` is (time, y, x) in raw mask values.
Pixels are decoded to reflectance 0..1 and an ``observed`` flag only for the window being processed
(:func:`read_rows`), so memory stays bounded by the window, never the scene. Scenes already on the grid are
read window by window straight from their files (:mod:`utilise_cli.windows`); reprojected scenes (``--align``)
and STAC assets through dask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from .cores import each_on_threads, work_threads
from .dates import day_positions
from .errors import OptionError, SceneError
from .options import ReadOptions
from .scenes import BandRef, Scene, discover_scenes, is_granule_file
from .screen import grow, screen, screen_margin
from .sentinel2 import DN_SCALE, FMASK_FILL, FMASK_OCCLUDED_BITS, SCL_NODATA, SCL_OCCLUDED, baseline_number
from .windows import WindowReader

log = logging.getLogger(__name__)

DECODE_THREADS = 4  # at most: dates are decoded in that many contiguous ranges


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform (pixel corners) and size in pixels."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    def same_as(self, other: "Grid") -> bool:
        return (self.crs == other.crs and (self.width, self.height) == (other.width, other.height)
                and self.transform.almost_equals(other.transform, precision=1e-6))


@dataclass(frozen=True)
class MaskRule:
    """How to read a cloud mask: kind 'binary' (nonzero = occluded), 'scl' (classes), 'probability' or 'fmask'
    (HLS bits)."""

    kind: str
    threshold: float = 50.0
    scl_occluded: tuple[int, ...] = SCL_OCCLUDED
    buffer: int = 0  # pixels the occluded area grows by (a square), for the thin rims that masks miss


@dataclass
class SceneCube:
    """Dated scenes on one grid (lazy). Dimensions: time, band, y, x."""

    reflectance: xr.DataArray
    mask: xr.DataArray
    scenes: list[Scene]
    grid: Grid
    rules: list[MaskRule]
    scales: tuple[float, ...]  # per date: reflectance = raw value x scale + offset
    offsets: tuple[float, ...]  # per date (raw DN of processing baseline 04.00 and later: -0.1)
    nodata: tuple[float, ...]  # per date, the raw value that means no data (NaN: only NaN does)
    origin: str = ""  # a STAC input's items and the assets chosen, for --dry-run and the log
    screen: bool = False  # add the clouds and shadows the masks miss (utilise_cli.screen) while decoding
    windows: WindowReader | None = None  # reads windows from the files (scenes on the grid); else through dask

    @property
    def bands(self) -> list[str]:
        return [str(b) for b in self.reflectance["band"].values]

    @property
    def dates(self) -> list:
        return [s.date for s in self.scenes]

    @property
    def has_masks(self) -> bool:
        """Whether the scenes come with cloud masks (mask kind none: the screen alone makes them)."""
        return any(rule.kind != "none" for rule in self.rules)

    @property
    def days(self) -> np.ndarray:
        """T positions for the network: day of year of the first date's year (1 January = 0)."""
        return np.asarray(day_positions(self.dates), dtype=np.float32)


def decode_mask(values: np.ndarray, rule: MaskRule) -> tuple[np.ndarray, np.ndarray]:
    """Raw mask values -> (occluded, nodata) boolean arrays of the same shape."""
    values = np.asarray(values)
    finite = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    if rule.kind == "scl":
        return np.isin(values, rule.scl_occluded), np.isin(values, SCL_NODATA) | ~finite
    if rule.kind == "probability":
        return np.where(finite, values, 0) >= rule.threshold, ~finite
    if rule.kind == "fmask":
        bits = np.where(finite, values, FMASK_FILL).astype(np.int64)
        fill = bits == FMASK_FILL
        return ((bits & FMASK_OCCLUDED_BITS) != 0) & ~fill, fill
    if rule.kind == "none":
        return np.zeros(values.shape, bool), np.zeros(values.shape, bool)
    return np.where(finite, values, 0) != 0, ~finite


def _grid_of(array: xr.DataArray) -> Grid:
    return Grid(array.rio.crs, array.rio.transform(), array.rio.width, array.rio.height)


def boxes_meet(box: Sequence[float], other: Sequence[float]) -> bool:
    """Whether two (left, bottom, right, top) boxes in one CRS overlap (edges touching do not count)."""
    return box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]


def _overlaps(grid: Grid, reference: Grid) -> bool:
    """Whether ``grid``'s footprint meets ``reference``'s (compared in the reference CRS)."""
    bounds = array_bounds(grid.height, grid.width, grid.transform)
    if grid.crs and reference.crs and grid.crs != reference.crs:
        bounds = transform_bounds(grid.crs, reference.crs, *bounds)
    return boxes_meet(bounds, array_bounds(reference.height, reference.width, reference.transform))


def open_cube(scenes: Sequence[Scene], rules: Sequence[MaskRule] | MaskRule,
              scales: Sequence[float] | float = DN_SCALE, offsets: Sequence[float] | float = 0.0,
              nodata: float | None = None, align: bool = False, chunk_rows: int = 512) -> SceneCube:
    """Stack scenes into a lazy cube on the first scene's grid.

    Scenes on another grid raise SceneError unless ``align`` (bilinear reprojection for reflectance,
    nearest for masks onto the first scene's grid). ``scales``, ``offsets``: per scene, or one for all (see
    :func:`scene_decoding`). ``nodata``: every scene's; by default each scene's own
    (its first band's file's nodata, else 0), as folders gathered from several sources mix 0 and 65535.
    """
    if isinstance(rules, MaskRule):
        rules = [rules] * len(scenes)
    opened: dict[Path, xr.DataArray] = {}

    def file(path: Path) -> xr.DataArray:
        """The file's bands (band, y, x), lazily: opened once however many bands or scenes it serves."""
        if path not in opened:
            opened[path] = rioxarray.open_rasterio(path, chunks={"band": 1, "y": chunk_rows, "x": -1},
                                                   mask_and_scale=False, lock=False)
        return opened[path]

    def layer(ref: BandRef) -> xr.DataArray:
        return file(ref.path).isel(band=ref.index - 1, drop=True)

    # The cube is assembled from dask arrays and wrapped in xarray once: xarray's concat, with its alignment of
    # coordinates, took 0.15 of the 0.24 s that opening 10 dates of 4 bands and a mask took (2-core AMD EPYC).
    reference: Grid | None = None
    frames, masks, nodatas = [], [], []
    reprojected = False
    for scene in scenes:
        grids = {"scene": _grid_of(file(scene.path))}
        if scene.mask_kind != "none":
            grids["mask"] = _grid_of(file(scene.mask.path))
        for what, grid in grids.items():
            if grid.crs is None:  # nothing to put the outputs (or --align) on
                path = scene.path if what == "scene" else scene.mask.path
                fix = (f"rio edit-info {path.name} --like {scene.path.name} --crs like --transform like"
                       if what == "mask" else f"rio edit-info {path.name} --crs EPSG:<its zone's code>")
                raise SceneError(f"{path}: has no CRS (not georeferenced); give it one (`{fix}`) and rerun")
        if reference is None:
            reference, ref_file = grids["scene"], file(scene.path)
        own = file(scene.path).rio.nodata if nodata is None else nodata
        nodatas.append(0.0 if own is None else float(own))
        stack = da.stack([file(ref.path).data[ref.index - 1] for ref in scene.bands.values()])
        mask = file(scene.mask.path).data[scene.mask.index - 1] if scene.mask_kind != "none" else None
        for what, grid in grids.items():
            if grid.same_as(reference):
                continue
            path = scene.path if what == "scene" else scene.mask.path
            if not align:
                raise SceneError(f"{path}: on another grid than {scenes[0].path.name} (CRS, transform or size "
                                 "differ); pass --align to reproject it onto the first scene's grid")
            if not _overlaps(grid, reference):
                raise SceneError(f"{path}: does not overlap the grid of {scenes[0].path.name}, even after --align; "
                                 "remove it or fill it with the scenes of its own place")
            log.info("reprojecting %s onto the grid of %s", path.name, scenes[0].path.name)
            reprojected = True
            array = (xr.concat([layer(ref) for ref in scene.bands.values()], dim="band") if what == "scene"
                     else layer(scene.mask))
            resampling = Resampling.bilinear if what == "scene" else Resampling.nearest
            array = array.rio.reproject_match(ref_file, resampling=resampling,
                                              nodata=nodatas[-1] if what == "scene" else 0)
            if what == "scene":
                stack = array.data
            else:
                mask = array.data
        if mask is None:  # zeros that read nothing (the screen makes the masks), on the grid the scene is now on
            mask = da.zeros(stack.shape[1:], np.uint8, chunks=(chunk_rows, -1))
        frames.append(stack)
        masks.append(mask)
    assert reference is not None
    coords = {"y": ref_file["y"].values, "x": ref_file["x"].values}
    time = np.array([np.datetime64(s.date) for s in scenes])
    reflectance = xr.DataArray(da.stack(frames), dims=("time", "band", "y", "x"),
                               coords={"time": time, "band": list(scenes[0].bands), **coords})
    mask_cube = xr.DataArray(da.stack(masks), dims=("time", "y", "x"), coords={"time": time, **coords})
    reflectance = reflectance.rio.write_crs(reference.crs).rio.write_transform(reference.transform)
    scales, offsets = ([v] * len(scenes) if isinstance(v, (int, float)) else v for v in (scales, offsets))
    return SceneCube(reflectance, mask_cube, list(scenes), reference, list(rules), tuple(map(float, scales)),
                     tuple(map(float, offsets)), tuple(nodatas),
                     windows=None if reprojected else WindowReader(scenes))


def guess_mask_kind(values: np.ndarray) -> str:
    """The mask kind that raw mask values look like: binary (0/1), scl (classes 0..11), probability (0..100) or
    fmask (HLS bits: integers up to 255, aerosol bits 6-7 set on most pixels); '' when none fits."""
    finite = np.asarray(values)[np.isfinite(values)] if np.asarray(values).dtype.kind == "f" else np.asarray(values)
    present = set(np.unique(finite).tolist())
    if present <= {0, 1}:
        return "binary"
    if present <= set(range(12)) and present & {4, 5, 6}:
        return "scl"
    if finite.size and finite.min() >= 0 and finite.max() <= 100:
        return "probability"
    whole = finite.size and present <= set(range(256))
    if whole and np.mean((finite.astype(np.int64) & 0b11000000) != 0) > 0.5:
        return "fmask"
    return ""


MASK_CHECKS = 3  # binary masks (by their names) whose values are looked at before a fill


def sampled_masks(scenes: Sequence[Scene], kind: str) -> Iterator[tuple[Scene, np.ndarray, np.dtype]]:
    """The first MASK_CHECKS masks of ``kind`` that have nonzero values: each one's scene, a sample of its values
    (:func:`sample_values`) and its data type."""
    checked = 0
    for scene in scenes:
        if checked == MASK_CHECKS:
            return
        if scene.mask_kind != kind:
            continue
        with rasterio.open(scene.mask.path) as src:
            values = sample_values(src, scene.mask.index, np.nan if src.nodata is None else src.nodata)
            dtype = np.dtype(src.dtypes[scene.mask.index - 1])
        if (values != 0).any():
            checked += 1
            yield scene, values, dtype


def check_binary_masks(scenes: Sequence[Scene]) -> None:
    """Stop where masks taken as binary by their names hold something else: cloud probability (read as binary,
    every pixel above 0 % is cloud: a fill of such masks filled 8 times the pixels it should have) or SCL
    classes. Looks at the first binary masks that have nonzero values (:func:`sampled_masks`). Raises OptionError
    naming the file and the --mask-kind to pass."""
    for scene, values, _ in sampled_masks(scenes, "binary"):
        present = np.unique(values)
        guess = guess_mask_kind(present)
        if guess == "scl" or (guess == "probability" and len(present) > 6):
            raise OptionError(f"{scene.mask.path}: values {present.min():g}..{present.max():g} in {len(present)} "
                              f"steps look like {'SCL classes' if guess == 'scl' else 'cloud probability'}, "
                              f"which a binary mask (as its name makes it) reads as cloud wherever above 0; pass "
                              f"--mask-kind {guess} (or --mask-kind binary if every nonzero value is cloud)")


def probability_scale(scenes: Sequence[Scene]) -> float:
    """The value that means 100 % in the scenes' cloud probability masks: 1 (floats within 0..1, as s2cloudless
    computes them), 100 (percent: MSK_CLDPRB, Earth Engine's s2cloudless band) or 255 (bytes, as Sentinel Hub's
    CLP); from the first probability masks that have clouds (:func:`sampled_masks`). Raises OptionError for values
    beyond 255, which are none of these."""
    highest, floats, checked = 0.0, True, False
    for scene, values, dtype in sampled_masks(scenes, "probability"):
        checked, floats, highest = True, floats and dtype.kind == "f", max(highest, float(values.max()))
        if highest > 255:
            raise OptionError(f"{scene.mask.path}: cloud probability up to {highest:g}, which is neither 0..1, "
                              "0..100 nor 0..255; pass the --mask-kind these masks are")
    return 1.0 if checked and floats and highest <= 1 else 255.0 if highest > 100 else 100.0


def open_folder(folder: str | Path, bands: Sequence[str], read: ReadOptions = ReadOptions(),
                chunk_rows: int = 512) -> SceneCube:
    """The lazy cube of a folder of dated scenes: find scenes and masks, then stack them (see ReadOptions)."""
    scenes = discover_scenes(folder, bands, read.mask_pattern, read.date_pattern, read.mask_kind, read.mask_band,
                             read.mask_folder, read.band_names)
    if read.mask_kind == "auto":
        check_binary_masks(scenes)
    full = probability_scale(scenes)
    if full != 100:
        log.info("cloud probability masks on a 0..%g scale: cloud from %g (--cloud-threshold %g %%)", full,
                 read.cloud_threshold * full / 100, read.cloud_threshold)
    rules = [MaskRule(s.mask_kind, read.cloud_threshold * full / 100, read.scl_classes, read.mask_buffer)
             for s in scenes]
    scales, offsets = scene_decoding(scenes, read)
    loose = [s for s, o in zip(scenes, offsets) if not s.product and o == 0 and is_granule_file(s.path)]
    if loose and read.offset is None:
        log.warning("%s and %d more: band files of SAFE granules outside their products, read without an offset; "
                    "raw DN of processing baseline 04.00 and later (every product since 25 January 2022, and "
                    "reprocessed older ones) carry +1000: fill the .SAFE folders themselves (their names give the "
                    "baseline) or pass --offset -0.1", Path(str(loose[0].path)).name, len(loose) - 1)
    # SAFE products, and STAC items downloaded a folder each, hold their masks (SCL) and some bands at 20 m: put on
    # the first 10 m band's grid without asking
    align = read.align or all(s.product or s.folder for s in scenes)
    cube = open_cube(scenes, rules, scales, offsets, read.nodata, align, chunk_rows)
    return with_screen(cube, read.screen)


def with_screen(cube: SceneCube, wanted: bool) -> SceneCube:
    """The cube with the screen on where asked, or where there are no masks (kind none), and possible (it needs
    B2, B4 and B8); said in the log."""
    wanted = wanted or not cube.has_masks
    missing = [b for b in ("B2", "B4", "B8") if b not in cube.bands]
    if wanted and missing:
        log.warning("no cloud screen: it needs bands B2, B4 and B8 (%s missing)", ", ".join(missing))
    cube.screen = wanted and not missing
    if cube.screen:
        log.debug("cloud screen on: clouds, haze, rims and shadows the masks miss are filled too")
    return cube


SAMPLE_SPOTS = 3  # per side: the spots of a band that decoding() samples where the file has no overviews
SAMPLE_PX = 64  # a spot's side
SAMPLE_ENOUGH = 1024  # valid values below which the whole band is sampled after all


def sample_values(src: rasterio.DatasetReader, index: int, nodata: float) -> np.ndarray:
    """Up to some 37,000 valid values (finite, not ``nodata``; float64) of band ``index``, spread over the raster.

    A decimated read where the file has overviews (GDAL reads one). Without them a decimated read decompresses
    every block of the band (an 8192^2 band in 512-px tiles: 1.6 s on one core, 2-core AMD EPYC), so spots of
    SAMPLE_PX in a grid of SAMPLE_SPOTS x SAMPLE_SPOTS, each within one block where blocks are that large, are
    read instead; where they hold fewer than SAMPLE_ENOUGH valid values (a scene that covers only a corner of
    its tile), the decimated read after all."""

    def valid(sample: np.ndarray) -> np.ndarray:
        sample = sample.astype(np.float64)
        return sample[np.isfinite(sample) & (sample != nodata)]

    height, width = src.height, src.width
    if not src.overviews(index) and max(height, width) > SAMPLE_SPOTS * SAMPLE_PX:
        rows, cols = src.block_shapes[index - 1]
        spots = []
        for i in range(SAMPLE_SPOTS):
            for j in range(SAMPLE_SPOTS):
                # the spot's centre: in the middle of the block that holds the grid point, where it fits
                y, x = ((2 * k + 1) * n // (2 * SAMPLE_SPOTS) for k, n in ((i, height), (j, width)))
                y = y // rows * rows + rows // 2 if rows >= SAMPLE_PX else y
                x = x // cols * cols + cols // 2 if cols >= SAMPLE_PX else x
                h, w = min(SAMPLE_PX, height), min(SAMPLE_PX, width)
                window = Window(min(max(0, x - w // 2), width - w), min(max(0, y - h // 2), height - h), w, h)
                spots.append(valid(src.read(index, window=window)))
        values = np.concatenate(spots)
        if values.size >= SAMPLE_ENOUGH:
            return values
    step = max(1, max(height, width) // 128)
    return valid(src.read(index, out_shape=(max(1, height // step), max(1, width // step)),
                          resampling=Resampling.nearest))


NO_SURFACE = -0.5  # reflectance below this is no surface's (L2A dips below 0 only slightly, over water and shadow)


def declared_decoding(src: rasterio.io.DatasetReader, index: int) -> tuple[float, float] | None:
    """The scale and offset a band's metadata state (GDAL's: reflectance = value x scale + offset), or None
    where they are GDAL's defaults (1, 0: not stated)."""
    scale, offset = float(src.scales[index - 1]), float(src.offsets[index - 1])
    return None if (scale, offset) == (1.0, 0.0) else (scale, offset)


def decoding(scene: Scene, read: ReadOptions) -> tuple[float, float]:
    """(scale, offset) of one scene: the options where given, else those its first band's metadata state
    (:func:`declared_decoding`), else worked out from its data type, tags (:func:`tag_offset`) and a sample of its
    first band (sample_values), and said in the log. Raises OptionError when the data do not say it
    unambiguously, or when the decoded values cannot be reflectance."""
    ref = next(iter(scene.bands.values()))
    name = Path(str(ref.path)).name
    with rasterio.open(ref.path) as src:
        tags = {**src.tags(), **src.tags(ref.index)}
        dtype = np.dtype(src.dtypes[ref.index - 1])
        nodata = read.nodata if read.nodata is not None else (src.nodata if src.nodata is not None else 0.0)
        values = sample_values(src, ref.index, nodata)
        declared = declared_decoding(src, ref.index)
    is_float = dtype.kind == "f"
    _check_not_bytes(ref.path, dtype, read, declared)
    if declared is not None and (read.scale is None or read.offset is None):
        log.info("%s: its band metadata say reflectance = value x %g %+g", name, *declared)
        read = replace(read, scale=declared[0] if read.scale is None else read.scale,
                       offset=declared[1] if read.offset is None else read.offset)
    scale = read.scale
    if scale is None:
        high = float(np.percentile(values, 99)) if values.size else 0.0
        if not is_float or high > 100:
            scale = DN_SCALE
        elif high <= 2.0:
            scale = 1.0
            log.info("%s: floating-point reflectance (99th percentile %.3f): reading it with scale 1", name,
                     high)
        else:
            raise OptionError(f"{ref.path}: floating-point values up to {high:.1f} are neither reflectance (0..1) "
                              "nor DN (0..10000); pass --scale (and --offset)")
    offset = read.offset
    if offset is None:
        offset = tag_offset(tags, scale, ref.path)
        if offset:
            log.info("%s: BOA_ADD_OFFSET in the tags: reading it with offset %g", name, offset)
    decoded = values * scale + offset
    if decoded.size and float(decoded.min()) < NO_SURFACE:  # found among the values, so not the nodata read
        low = float(values.min())
        raise OptionError(f"{ref.path}: values of {low:g} (reflectance {low * scale + offset:.3g}, which no surface "
                          f"has) look like a no-data mark that its nodata ({nodata:g}) does not name; pass --nodata "
                          f"{low:g}")
    if decoded.size and not (0.001 <= float(np.median(decoded)) <= 1.5):
        raise OptionError(f"{ref.path}: with --scale {scale:g} --offset {offset:g} the median reflectance is "
                          f"{float(np.median(decoded)):.4g}, outside 0.001..1.5; pass the --scale and --offset "
                          "that turn these values into reflectance 0..1")
    return scale, offset


def tag_offset(tags: dict[str, str], scale: float, path: Path | str) -> float:
    """A file's offset in reflectance from its tags: BOA_ADD_OFFSET (DN) x scale; 0 where there is none (harmonised
    data). Raises OptionError for a processing baseline of 04.00 or later without it (raw or harmonised cannot
    be told apart)."""
    added = next((v for k, v in tags.items() if k.upper().startswith("BOA_ADD_OFFSET")), None)
    if added is not None:
        return float(added) * scale
    baseline = next((v for k, v in tags.items() if "PROCESSING_BASELINE" in k.upper()), None)
    if baseline is not None and baseline_number(baseline) >= 4.0:
        raise OptionError(f"{path}: processing baseline {baseline} without a BOA_ADD_OFFSET tag: raw DN "
                          "carry +1000 unless the product is harmonised; pass --offset -0.1 (raw DN) or "
                          "--offset 0 (harmonised)")
    return 0.0


def scene_decoding(scenes: Sequence[Scene], read: ReadOptions) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(scale, offset) of each scene: :func:`decoding` of the first, then each scene's own, since a series may
    cross processing baseline 04.00 (25 January 2022), from which raw DN carry +1000, and a folder gathered from
    several exports may hold float reflectance beside DN. An offset comes from ``--offset`` where given, else
    what the scene's source states (``Scene.offset``: a SAFE product's baseline, STAC metadata), else its local
    file's tags (:func:`tag_offset`), else (a remote file) the first scene's. A scene stored as floats beside
    integers, or the other way round, gets its own scale (unless ``--scale``). The first scene of every other
    (scale, offset) is checked as the first is."""
    def said(scene: Scene) -> float | None:
        return read.offset if read.offset is not None else scene.offset

    first = decoding(scenes[0], replace(read, offset=said(scenes[0])))
    first_float = _header(scenes[0])[1].kind == "f" if scenes[0].files else False
    found, checked = [first], {first}
    for scene in scenes[1:]:
        tags, dtype, declared = _header(scene) if scene.files else ({}, None, None)
        is_float = first_float if dtype is None else dtype.kind == "f"
        if dtype is not None:
            _check_not_bytes(scene.path, dtype, read, declared)
        scale = read.scale if read.scale is not None or declared is None else declared[0]
        if scale is None and is_float != first_float:
            pair = decoding(scene, replace(read, offset=said(scene)))
        else:
            scale = first[0] if scale is None else scale
            offset = said(scene)
            if offset is None and declared is not None:
                offset = declared[1]
            if offset is None:
                offset = tag_offset(tags, scale, scene.path) if scene.files else first[1]
            pair = (scale, offset)
            if pair not in checked:
                decoding(scene, replace(read, scale=pair[0], offset=pair[1]))
        checked.add(pair)
        found.append(pair)
    scales, offsets = (tuple(v) for v in zip(*found))
    if len(checked) > 1:
        log.info("the dates are stored differently (raw DN of processing baseline 04.00 and later carry +1000; "
                 "float reflectance beside DN): %s", describe_decoding([s.date for s in scenes], scales, offsets))
    return scales, offsets


def _header(scene: Scene) -> tuple[dict[str, str], np.dtype, tuple[float, float] | None]:
    """The tags of a scene's first band (its file's and the band's own), its data type, and the scale and offset
    its metadata state (or None)."""
    ref = next(iter(scene.bands.values()))
    with rasterio.open(ref.path) as src:
        return ({**src.tags(), **src.tags(ref.index)}, np.dtype(src.dtypes[ref.index - 1]),
                declared_decoding(src, ref.index))


def _check_not_bytes(path: Path | str, dtype: np.dtype, read: ReadOptions,
                     declared: tuple[float, float] | None) -> None:
    """Refuse bands stored as bytes (0..255) that neither --scale nor their metadata decode: a picture's stretch (a
    true-colour export), not reflectance, which decoded as DN / 10000 filled silently with values near 0."""
    if dtype.itemsize == 1 and read.scale is None and declared is None:
        raise OptionError(f"{path}: bands stored as bytes (0..255) are a picture's stretch, not reflectance; export "
                          "the bands as DN (uint16) or reflectance (float), or pass --scale (and --offset) if these "
                          "bytes are reflectance")


def describe_decoding(dates: Sequence, scales: Sequence[float], offsets: Sequence[float]) -> str:
    """'reflectance = value x 0.0001 + 0', or per way its dates' count and span: 'reflectance = value x 0.0001 + 0
    on 6 dates (2021-04-03..2021-12-20); value x 0.0001 - 0.1 on 6 dates (2022-01-27..2022-06-10)'."""
    pairs = list(zip(scales, offsets))
    ways = list(dict.fromkeys(pairs))

    def text(scale: float, offset: float) -> str:
        return f"value x {scale:g} {'-' if offset < 0 else '+'} {abs(offset):g}"

    if len(ways) == 1:
        return "reflectance = " + text(*ways[0])
    parts = []
    for way in ways:
        at = [d for d, p in zip(dates, pairs) if p == way]
        parts.append(f"{text(*way)} on {len(at)} date{'s' if len(at) > 1 else ''} ({at[0]}..{at[-1]})")
    return "reflectance = " + "; ".join(parts)


def read_margin(cube: SceneCube) -> int:
    """Pixels read around a window on every side: the masks' buffer, and the cloud screen's reach where it is on."""
    return max((rule.buffer for rule in cube.rules), default=0) + (screen_margin(cube.has_masks) if cube.screen else 0)


def read_classes(cube: SceneCube, row0: int, row1: int, col0: int = 0, col1: int | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode rows [row0, row1) and columns [col0, col1) (default: all) of every date.

    Returns reflectance T x C x h x w (float32, 0..1 after scale/offset; NaN where there is no data),
    occluded T x h x w (bool, the cloud mask or the screen says cloud or shadow; mask buffer included),
    nodata T x h x w (bool) and screened T x h x w (bool, the part of ``occluded`` that only the screen found).
    """
    # The mask buffer and the screen look at pixels around the window, so that every pixel decodes alike in any
    # window: the masks are read with that margin, the bands only where the screen needs them.
    height, width = cube.grid.height, cube.grid.width
    col1 = width if col1 is None else col1
    margin = read_margin(cube)
    m0, m1 = max(0, row0 - margin), min(height, row1 + margin)
    c0, c1 = max(0, col0 - margin), min(width, col1 + margin)
    (s0, s1), (b0, b1) = ((m0, m1), (c0, c1)) if cube.screen else ((row0, row1), (col0, col1))
    if cube.windows is not None:
        raw, raw_mask = cube.windows.read((s0, s1), (b0, b1), (m0, m1), (c0, c1))
    else:  # with local threads whatever dask's default is: under a dask.distributed Client, the default would
        # ship every stripe through the cluster and back
        raw, raw_mask = (np.asarray(a) for a in dask.compute(cube.reflectance[:, :, s0:s1, b0:b1].data,
                                                              cube.mask[:, m0:m1, c0:c1].data, scheduler="threads"))
    reflectance = np.empty(raw.shape, np.float32)
    nodata = np.empty(raw[:, 0].shape, bool)
    occluded = np.empty((len(cube.rules), m1 - m0, c1 - c0), dtype=bool)

    def decode(dates: range) -> None:
        """Dates [start, stop): each is decoded on its own, so date ranges can go to threads."""
        at = slice(dates.start, dates.stop)
        # One pass to float32 instead of a cast, a product and a sum over the window (the same values).
        for t in dates:
            np.multiply(raw[t], np.float32(cube.scales[t]), out=reflectance[t], dtype=np.float32)
            if cube.offsets[t]:
                reflectance[t] += np.float32(cube.offsets[t])
            # band by band: np.any(raw == nodata, axis=1) took 8.7 instead of 3.7 ms for 10 dates of 4 x 138 x
            # 2048 px (a bool array of every band first, then a reduction over its short axis; 2-core AMD EPYC)
            value = cube.nodata[t]
            np.equal(raw[t, 0], value, out=nodata[t])
            for band in range(1, raw.shape[1]):
                nodata[t] |= raw[t, band] == value
        if not np.issubdtype(raw.dtype, np.integer):  # integers scale to finite numbers
            nodata[at] |= ~np.isfinite(reflectance[at]).all(axis=1)
        for t in dates:
            rule = cube.rules[t]
            occluded[t], mask_nodata = decode_mask(raw_mask[t], rule)
            nodata[t] |= mask_nodata[s0 - m0: s1 - m0, b0 - c0: b1 - c0]
            if rule.buffer:  # the given mask grows (the screen then looks around it)
                occluded[t] = grow(occluded[t][None], rule.buffer)[0]
        np.copyto(reflectance[at], np.nan, where=nodata[at, None])

    # numpy releases the GIL: decoding (all of reading but the files' own reads and the screen) took 0.71 s of
    # a 2048^2 x 10-date linear fill on one thread, 0.44-0.46 s on two (2-core AMD EPYC).
    dates = len(cube.rules)
    threads = work_threads(min(DECODE_THREADS, dates))
    each_on_threads(decode, [range(dates * i // threads, dates * (i + 1) // threads) for i in range(threads)],
                    threads, "utilise-decode")
    screened = np.zeros_like(occluded)
    if cube.screen:  # here the bands cover the masks' window
        masked = occluded if cube.has_masks else None
        screened = screen(reflectance, masked, cube.bands, valid=~nodata)
        occluded = occluded | screened
    bands = (slice(row0 - s0, row1 - s0), slice(col0 - b0, col1 - b0))
    masks = (slice(row0 - m0, row1 - m0), slice(col0 - c0, col1 - c0))
    return reflectance[:, :, bands[0], bands[1]], occluded[:, masks[0], masks[1]], nodata[:, bands[0], bands[1]], \
        screened[:, masks[0], masks[1]]


def read_stripe(cube: SceneCube, row0: int, row1: int, col0: int = 0, col1: int | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode rows [row0, row1) and columns [col0, col1) (default: all) of every date for filling.

    Returns reflectance T x C x h x w (float32, 0..1 after scale/offset; NaN where not observed), observed
    T x h x w (bool: valid data and not occluded) and screened T x h x w (bool: occluded only by the screen).
    """
    reflectance, occluded, nodata, screened = read_classes(cube, row0, row1, col0, col1)
    observed = ~occluded & ~nodata
    np.copyto(reflectance, np.nan, where=~observed[:, None])
    return reflectance, observed, screened & ~nodata


def read_rows(cube: SceneCube, row0: int, row1: int, col0: int = 0, col1: int | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_stripe` without the screen's share: reflectance T x C x h x w and observed T x h x w."""
    reflectance, observed, _ = read_stripe(cube, row0, row1, col0, col1)
    return reflectance, observed
