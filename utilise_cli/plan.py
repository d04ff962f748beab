"""What a fill run will do, worked out before any pixel is read: options, the predictor, bands, the cube,
chip positions, outputs and a cost estimate."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import rasterio

from . import __version__
from .chips import Panel, chip_count, chip_starts, column_panels
from .cores import work_threads
from .cube import SceneCube, describe_decoding, open_folder, read_margin
from .errors import CheckpointError, OptionError, OutputError, SceneError
from .hardware import cpu_has_bf16, no_gpu_for_torch, resolve_precision
from .options import FillOptions
from .scenes import Scene
from .sentinel2 import DEFAULT_BANDS, band_key
from .windows import CACHE_MB

if TYPE_CHECKING:
    from .inference import Predictor
    from .network.header import CheckpointHeader

log = logging.getLogger(__name__)

# Measured with benchmarks/bench_model.py on the 2-core CI machine: seconds per 10 dates of a 128 x 128 chip.
_SECONDS_PER_CHIP_128_T10_CPU = 0.8
# Peak resident memory, fitted to `benchmarks/bench_fill.py` peaks of `--method linear` (1024^2, 2048^2, 4096^2,
# 8192^2, 10 dates, chip 128; 626-629, 771-787, 816-824, 837-844 MB, 2026-11-27) on the project's 2-core machine,
# erring 4-9 % high: the libraries; about 4 float32 copies of one stripe (T x C x chip x W: inputs, blending
# sums, the read with its margins, the screen's work arrays); the GDAL block cache and the writers' tile rows,
# which grow with the raster width up to a ceiling; and the network's activations (bytes per chip pixel-date at
# encoder width 32, scaled by the first width). Those depend on how the CPU runs the network: in bf16 where it
# has native bf16 (AVX-512 BF16; an older batch-4 fit: `auto` measured 733, 834, 883 MB and `utilise` 764 MB at
# 1024^2, against 770, 941, 953 and 770 MB estimated), and in float32 elsewhere (a 2-core AMD EPYC with AVX2 only,
# 2026-12-05: one forward pass at batch 1 raised the peak by 266 MB, 2,215 bytes per pixel-date, and
# `utilise` fills peaked at 932, 1095 and 1190 MB at 1024^2, 2048^2 and 4096^2, against 769, 941 and 959 MB
# estimated with the bf16 figure). bf16 forced on a CPU without it took as much as float32 (2,083 bytes).
_BASE_MB = 380
_STRIPE_COPIES = 4
_OUTPUT_MB_PER_COLUMN_DATE = 0.02
_OUTPUT_MB_CEILING_PER_DATE = 29
_NETWORK_BYTES_PER_PIXEL_DATE = {"native bf16": 610, "fp32": 2200}
# With column panels the stripe no longer grows with the width; what still grows with the raster's size (the
# outputs' tile indexes, GDAL's cache filling to its cap) is small: linear, 10 dates, windows read from the files,
# 2048^2 / 8192^2: 966 / 1016 MB (each fill's own VmHWM; benchmarks/bench_fill.py).
_MB_PER_RASTER_MEGAPIXEL = 0.8
# With the network on a GPU its activations are in GPU memory; the host holds CUDA's libraries instead. Measured
# on an H100 machine (shipped network, 10 dates, batch 4 and 16): peak RSS 2287-2314 MB at 1024^2 and 2497-2621 MB
# at 2048^2, about 1500 MB above the same estimate without the network term.
_CUDA_HOST_MB = 1500
# --method auto scores the methods on up to SELF_VALIDATION_CHIPS chips first, holding them beside the network's
# activations (before the stripes and outputs exist): the peak is the larger of the two phases. What that phase holds
# besides the libraries and a pass: the chips and their copies (140 bytes per chip pixel-date) and the interpolations'
# temporaries for a batch (280 bytes per pixel-date: `adjusted` on one 70-date chip +322 MB). Fitted to auto fills of
# 70 dates (149 x 165 px, 4 chips: 1902 MB; 512^2, 8 chips: 2464 MB; 2-core AMD EPYC, bf16), erring 7-9 % high, where
# the fill's own estimate was 1374 and 2159 MB. At 10 dates the phase stays below the fill (1024^2: 229 against 390 MB).
SELF_VALIDATION_CHIPS = 8
_VALIDATION_BYTES_PER_CHIP_PIXEL_DATE = 140
_VALIDATION_BYTES_PER_BATCH_PIXEL_DATE = 280


@dataclass
class FillPlan:
    """What a fill run would do: inputs, grid, chip starts (pixels) and rough cost."""

    source: Path  # the folder of scenes or the STAC JSON file
    cube: SceneCube
    bands: list[str]
    chip_size: int
    overlap: int
    rows: list[int]  # first pixel row of every chip row
    cols: list[int]  # first pixel column of every chip column
    outputs: list[Path]
    flags: list[Path]
    todo: list[int]
    estimated_seconds: float
    estimated_memory_mb: float
    fingerprints: list[str]  # per date: what decides its output (see fingerprint)
    panels: list[Panel]  # column panels, filled one after the other (chips at their edges run in both)
    batch_size: int = 1  # chips per forward pass (resolve_batch_size)
    network: str = ""  # the network that fills, in words (checkpoint, device, precision); '' for a baseline
    workers: int = 1  # batches predicted at a time (network_workers)

    @property
    def scenes(self) -> list[Scene]:
        return self.cube.scenes

    @property
    def chips(self) -> int:
        """Chips to run (or pass through), counting those at panel edges once per panel."""
        return chip_count(self.rows, self.panels)


def output_paths(out: Path, scene: Scene) -> tuple[Path, Path]:
    """Final COG path and its 'filled' flags sidecar for one date."""
    stem = f"{scene.date:%Y%m%d}_filled"
    return out / f"{stem}.tif", out / f"{stem}_flags.tif"


def load_predictor(options: FillOptions) -> tuple[Predictor, dict[str, str]]:
    """The network (or baseline) to fill with, and the tags that identify it in the outputs."""
    from .inference import BaselinePredictor, NetworkPredictor

    if options.method not in ("utilise", "auto"):
        return BaselinePredictor(options.method), {"UTILISE_METHOD": options.method}
    from .weights import resolve_checkpoint

    checkpoint = resolve_checkpoint(options.checkpoint)
    model = _cached_model(str(checkpoint), options.device)
    device = next(model.parameters()).device
    precision = _precision_said(checkpoint, model.metadata, options.precision, device.type)
    window = options.time_window or int(model.metadata.get("max_dates", 0) or 0)
    tags = {"UTILISE_METHOD": options.method, "UTILISE_CHECKPOINT": checkpoint.name,
            "UTILISE_CHECKPOINT_SHA256": str(model.metadata.get("checkpoint_sha256", ""))}
    tags["UTILISE_PRECISION"] = precision
    return NetworkPredictor(model, window=window, precision=precision, every_date=options.regenerate_all), tags


def _precision_said(checkpoint: Path, metadata: dict, asked: str, device_type: str) -> str:
    """The precision the network runs at on ``device_type``, said in the log with the checkpoint's status."""
    if metadata.get("status"):
        log.warning("%s: %s", checkpoint.name, metadata["status"])
    precision = resolve_precision(asked, device_type)
    if asked == "auto":
        log.info("precision auto: %s on %s%s", precision, device_type,
                 " (the CPU has native bf16)" if precision == "bf16" and device_type == "cpu" else "")
    return precision


@dataclass(frozen=True)
class _Device:
    type: str


@dataclass(frozen=True)
class PlannedPredictor:
    """What a plan needs of the predictor (name; for the network its checkpoint's header, device and precision),
    known without loading torch: ``--dry-run`` plans with it, and the plan is the one a fill makes."""

    name: str
    model: CheckpointHeader | None = None
    device: _Device | None = None
    precision: str = "fp32"


def planning_predictor(options: FillOptions) -> Predictor | PlannedPredictor:
    """The predictor as far as :func:`plan_fill` needs it: from the checkpoint's header where the network will run
    on the CPU (so no torch is imported), else (a GPU may be there, or a file only torch reads) the network
    itself (:func:`load_predictor`)."""
    if options.method not in ("utilise", "auto"):
        return PlannedPredictor(options.method)
    from .network.header import read_header
    from .weights import resolve_checkpoint

    on_cpu = options.device == "cpu" or (options.device == "auto" and no_gpu_for_torch())
    checkpoint = resolve_checkpoint(options.checkpoint)
    header = read_header(checkpoint) if on_cpu else None
    if header is None:
        return load_predictor(options)[0]
    return PlannedPredictor("utilise", header, _Device("cpu"),
                            _precision_said(checkpoint, header.metadata, options.precision, "cpu"))


@functools.lru_cache(maxsize=2)
def _cached_model(checkpoint: str, device: str):
    """One loaded network per process and checkpoint: a dask worker filling many tiles loads it once."""
    from .network import load_model

    return load_model(checkpoint, device=device)


def resolve_bands(options: FillOptions, predictor: Predictor | None) -> list[str]:
    """The bands to fill: --bands, else the checkpoint's, else the default; checked against the network."""
    model = getattr(predictor, "model", None)
    meta_bands = list(model.metadata.get("bands", [])) if model is not None else []
    bands = [band_key(b) for b in (options.bands or meta_bands or DEFAULT_BANDS)]
    if model is not None:
        cfg = model.config
        source = model.metadata.get("checkpoint_path", "checkpoint")
        if cfg.auxiliary_inputs:
            raise CheckpointError(f"{source}: takes {cfg.input_dim} channels and gives {cfg.output_dim} "
                                  "(a SAR-guided model); fill needs an optical-only checkpoint")
        if cfg.output_dim != len(bands):
            raise CheckpointError(f"{source}: fills {cfg.output_dim} bands but {len(bands)} were asked for "
                                  f"({', '.join(bands)}); pass --bands with {cfg.output_dim} names or another "
                                  "checkpoint")
        if meta_bands and [band_key(b) for b in meta_bands] != bands:
            raise CheckpointError(f"{source}: trained on bands {', '.join(meta_bands)}, not {', '.join(bands)}; "
                                  "use matching --bands or another checkpoint")
        if options.chip_size % cfg.size_multiple:
            m = cfg.size_multiple
            raise SceneError(f"--chip-size {options.chip_size} must be a multiple of {m} for this "
                             f"{cfg.levels}-level network (try {options.chip_size // m * m or m})")
    return bands


def open_source(source: Path, bands: list[str], options: FillOptions) -> SceneCube:
    """The lazy cube of a folder of scenes or of a STAC JSON file (:mod:`utilise_cli.stac`)."""
    from .stac import is_stac

    if is_stac(source):
        from .stac import open_stac

        return open_stac(source, bands, options.read, options.stac, chunk_rows=options.chip_size)
    if options.stac.given:
        raise OptionError(f"{source}: --crs, --resolution, --bbox and --asset apply to a STAC input (a .json file "
                          "of items), not to a folder of scenes; drop them, or --align scenes on other grids")
    return open_folder(source, bands, options.read, chunk_rows=options.chip_size)


def plan_fill(source: str | Path, out: str | Path, options: FillOptions,
              predictor: Predictor | None = None) -> FillPlan:
    """Read headers, check inputs and outputs, and work out chips and cost, without reading pixels.
    ``source``: a folder of dated scenes, or a STAC ItemCollection / Catalog JSON file."""
    source, out = Path(source), Path(out)
    if source.is_dir() and (out.resolve() == source.resolve() or source.resolve() in out.resolve().parents):
        raise OutputError(f"{out}: inside the input folder {source}; choose an --out outside it (outputs there "
                          "would be read as scenes on the next run)")
    bands = resolve_bands(options, predictor)
    cube = open_source(source, bands, options)
    grid = cube.grid
    rows = chip_starts(grid.height, options.chip_size, options.overlap)
    cols = chip_starts(grid.width, options.chip_size, options.overlap)
    paths = [output_paths(out, s) for s in cube.scenes]
    prints = [fingerprint(options, predictor, bands, cube, s) for s in cube.scenes]
    todo = [i for i, (cog, flags) in enumerate(paths)
            if options.overwrite or not (cog.exists() and flags.exists()) or _made_with(cog) != prints[i]]
    stale = [paths[i][0].name for i in todo if not options.overwrite and paths[i][0].exists()]
    if stale:
        log.info("%d outputs in %s were made from other inputs or options (%s...): redoing them", len(stale), out,
                 stale[0])
    panels = column_panels(grid.width, cols, options.chip_size, options.panel_width)
    striped = cube.windows.striped() if cube.windows is not None and len(panels) > 1 else ""
    if striped:
        log.warning("%s is stored in strips, not tiles: each of the %d column panels decompresses its rows again "
                    "(a 4096-px raster, 2 panels: 6 %% longer); tile the scenes (gdal_translate -co TILED=YES) or "
                    "pass --panel-width 0 where memory allows", striped, len(panels))
    t, c = len(cube.scenes), len(bands)
    chips = chip_count(rows, panels)
    per_chip = _SECONDS_PER_CHIP_128_T10_CPU * (options.chip_size / 128) ** 2 * max(t, 1) / 10
    seconds = chips * per_chip if options.method in ("utilise", "auto") else chips * 0.01 * t
    width = getattr(getattr(predictor, "model", None), "config", None)
    batch = resolve_batch_size(options.batch_size, predictor)
    workers = network_workers(options.network_workers, predictor)
    device = getattr(predictor, "device", None)
    # Each worker holds a batch's activations.
    memory = estimate_memory_mb(t, c, min(options.chip_size, grid.height), max(p.width for p in panels),
                                batch * workers, width.encoder_widths[0] if width is not None else 0,
                                grid.height * grid.width,
                                gpu=device is not None and device.type == "cuda",
                                native_bf16=getattr(predictor, "precision", "fp32") in ("bf16", "fp16")
                                and cpu_has_bf16(), block_cache_mb=_block_cache_mb(cube, panels),
                                validation_chips=min(chips, SELF_VALIDATION_CHIPS) if options.method == "auto" else 0)
    return FillPlan(source, cube, bands, options.chip_size, options.overlap, rows, cols, [p[0] for p in paths],
                    [p[1] for p in paths], todo, seconds, memory, prints, panels, batch, describe_network(predictor),
                    workers)


def describe_network(predictor: Predictor | PlannedPredictor | None) -> str:
    """The network a predictor runs, in words: checkpoint file and the start of its SHA-256, device, precision;
    '' for a baseline."""
    model = getattr(predictor, "model", None)
    if model is None:
        return ""
    name = Path(str(model.metadata.get("checkpoint_path", "checkpoint"))).name
    digest = str(model.metadata.get("checkpoint_sha256", ""))[:12]
    return f"{name}{f' (sha256 {digest})' if digest else ''} on {predictor.device.type}, {predictor.precision}"


def resolve_batch_size(batch_size: int, predictor: Predictor) -> int:
    """Chips per forward pass: as asked, or for 0 (auto) 16 on a GPU and 1 on a CPU, where the convolutions of one
    10-date chip already fill the cores and more chips only add memory (1024^2 x 10 dates on 2 cores: batch 1
    16.1 s / 1020 MB, batch 4 17.2 s / 1441 MB). On an H100, 1024^2 x 10 dates with bf16, warm: the network
    took 1.80 / 1.46 / 1.19 s at batch 4 / 8 / 16, for 407 / 780 / 1059 MiB of GPU memory."""
    if batch_size > 0:
        return batch_size
    device = getattr(predictor, "device", None)
    return 16 if device is not None and device.type == "cuda" else 1


def network_workers(asked: int, predictor: Predictor) -> int:
    """Chips to predict at a time: ``asked`` for the network on a CPU (at most its usable cores, or the threads
    set), else 1 (a GPU takes its chips in batches; a baseline is numpy's)."""
    device = getattr(predictor, "device", None)
    return work_threads(asked) if device is not None and device.type == "cpu" else 1


def _inputs(scene: Scene) -> str:
    """What a date is read from, for --dry-run: its STAC items, or its files (its SAFE product, or the dated folder
    they lie in) and its mask (with its mask folder where it lies in one)."""
    if scene.items:
        return f"items {', '.join(scene.items)}"
    mask = Path(str(scene.mask.path))
    beside = scene.product or mask.parent == Path(str(scene.files[0])).parent
    files = scene.product or (f"{scene.folder}/ " if scene.folder else "") + ", ".join(p.name for p in scene.files)
    return f"{files}  mask {mask.name if beside else f'{mask.parent.name}/{mask.name}'}"


def describe_plan(plan: FillPlan, options: FillOptions, available_mb: float) -> list[str]:
    """What --dry-run prints: inputs per date (files, or STAC items), outputs, grid, chips, time and memory."""
    grid = plan.cube.grid
    lines = [f"{len(plan.scenes)} dates in {plan.source}" + (f": {plan.cube.origin}" if plan.cube.origin else ":")]
    for i, (scene, path) in enumerate(zip(plan.scenes, plan.outputs)):
        state = "to write" if i in plan.todo else "exists, skipped"
        lines.append(f"  {scene.date}  {_inputs(scene)} ({scene.mask_kind})  -> {path.name} ({state})")
    network = []
    if plan.network:
        chips = f"{plan.batch_size} chip{'s' if plan.batch_size > 1 else ''} per pass"
        kept = " (auto keeps it where it beats the interpolations on the scene's own validation)"
        network = [f"network   {plan.network}, {chips}{kept if options.method == 'auto' else ''}"]
    lines += [f"grid      {grid.width} x {grid.height} px, {grid.crs}, pixel {abs(grid.transform.a):g} "
              f"{'m' if grid.crs is None or grid.crs.is_projected else 'degrees'}, top left "
              f"({grid.transform.c:.1f}, {grid.transform.f:.1f})",
              f"bands     {', '.join(plan.bands)}; method {options.method}",
              f"decoding  {describe_decoding(plan.cube.dates, plan.cube.scales, plan.cube.offsets)}",
              *network,
              f"masks     {describe_masks(plan.cube, options.read.mask_buffer)}",
              f"chips     {plan.chips} of {options.chip_size} x {options.chip_size} px, overlap {options.overlap} px "
              "(chips without clouds are not run)" + (
                  f", in {len(plan.panels)} column panels of up to {max(p.width for p in plan.panels)} px "
                  "(chips at their edges run in both)" if len(plan.panels) > 1 else ""),
              f"estimate  at most {plan.estimated_seconds:.0f} s on 2 CPU cores, about "
              f"{plan.estimated_memory_mb:.0f} MB of memory ({available_mb:.0f} MB available)"]
    return lines


def describe_masks(cube: SceneCube, buffer: int) -> str:
    """What decides the pixels to fill, in words: the given masks, their buffer and the cloud screen."""
    if not cube.has_masks:
        return "none (the cloud screen makes them)"
    given = f"as given, grown by {buffer} px" if buffer else "as given"
    return given + ("; plus the cloud screen (flag 2)" if cube.screen else "; no cloud screen")


def _block_cache_mb(cube: SceneCube, panels: list[Panel]) -> float:
    """GDAL's block cache the reads of the widest panel want (windows.WindowReader.cache_wanted), in MB; the
    default cap where windows are read through dask."""
    if cube.windows is None:
        return CACHE_MB
    margin, width = read_margin(cube), cube.grid.width
    return max(cube.windows.cache_wanted((max(0, p.lo - margin), min(width, p.hi + margin))) for p in panels) / 2**20


def estimate_memory_mb(dates: int, bands: int, stripe_rows: int, width: int, batch: int, network_width: int,
                       raster_pixels: int = 0, gpu: bool = False, native_bf16: bool = False,
                       block_cache_mb: float = CACHE_MB, validation_chips: int = 0) -> float:
    """Peak resident memory of a fill in MB (see the constants above); ``width``: the columns of the widest column
    panel (a stripe spans a panel, not the raster); ``network_width`` 0 for a baseline; ``raster_pixels``: height
    x width of the raster; ``gpu``: the network runs on a CUDA device (its activations are not in this memory);
    ``native_bf16``: it runs in bf16 on a CPU that has bf16 (smaller activations than float32); ``block_cache_mb``:
    GDAL's block cache the reads want (the fit counts the default cap, CACHE_MB; a larger one adds the rest);
    ``validation_chips``: the chips --method auto scores the methods on first (0: none)."""
    stripe = 4 * dates * bands * stripe_rows * width * _STRIPE_COPIES
    if gpu and network_width:
        network = _CUDA_HOST_MB * 1e6
    else:
        per_pixel_date = _NETWORK_BYTES_PER_PIXEL_DATE["native bf16" if native_bf16 else "fp32"]
        network = per_pixel_date * batch * dates * stripe_rows ** 2 * network_width / 32
    outputs = dates * min(_OUTPUT_MB_PER_COLUMN_DATE * width, _OUTPUT_MB_CEILING_PER_DATE)
    cache = max(0.0, block_cache_mb - CACHE_MB)
    filling = outputs + stripe / 1e6 + _MB_PER_RASTER_MEGAPIXEL * raster_pixels / 1e6
    validating = ((_VALIDATION_BYTES_PER_CHIP_PIXEL_DATE * validation_chips + _VALIDATION_BYTES_PER_BATCH_PIXEL_DATE
                   * batch) * dates * stripe_rows ** 2 / 1e6 if validation_chips else 0.0)
    return _BASE_MB + cache + network / 1e6 + max(filling, validating)


def available_memory_mb() -> float:
    """Memory the system can give this process now (MemAvailable), in MB; inf where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def check_memory(plan: FillPlan, limit_mb: float | None = None) -> None:
    """Refuse, before any pixel is read, a fill whose estimate exceeds ``limit_mb`` (default: what is available),
    naming the options that lower it."""
    limit = available_memory_mb() if limit_mb is None else limit_mb
    if plan.estimated_memory_mb > limit:
        raise OptionError(f"this fill needs about {plan.estimated_memory_mb:.0f} MB of memory but {limit:.0f} MB "
                          f"are {'allowed' if limit_mb else 'available'}; lower --panel-width, --chip-size or "
                          "--batch-size, use --method linear, or split the scenes into tiles (a folder of tile "
                          "folders)")


def fingerprint(options: FillOptions, predictor: Predictor | None, bands: list[str], cube: SceneCube,
                scene: Scene) -> str:
    """A digest of what decides one date's output pixels: the date's input files (name, size, modification
    time) and those of every date (a fill uses them all), the method and checkpoint, decoding, mask and chip
    options, precision, output type and compression. Stored in the output's UTILISE_FINGERPRINT tag."""
    model = getattr(predictor, "model", None)
    files = sorted({_file_identity(p) for s in cube.scenes for p in [*s.files, s.mask.path]})
    what = {"version": __version__, "date": scene.date.isoformat(), "files": files, "bands": bands,
            "items": [s.items for s in cube.scenes], "stac": asdict(options.stac),
            "method": options.method, "predictor": getattr(predictor, "name", ""),
            "checkpoint": model.metadata.get("checkpoint_sha256", "") if model is not None else "",
            "read": {**asdict(options.read), "scales": cube.scales, "offsets": cube.offsets},
            "chip": [options.chip_size, options.overlap, options.time_window], "precision": options.precision,
            "dtype": options.dtype, "compress": options.compress, "regenerate_all": options.regenerate_all}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _file_identity(path: Path | str) -> tuple[str, int, int]:
    """(name, size, modification time) of a local file; (path, 0, 0) of a remote one."""
    if isinstance(path, Path) and path.exists():
        stat = path.stat()
        return path.name, stat.st_size, stat.st_mtime_ns
    return str(path), 0, 0


def _made_with(cog: Path) -> str:
    """The fingerprint tag of an existing output ('' when there is none or it cannot be read)."""
    try:
        with rasterio.open(cog) as src:
            return src.tags().get("UTILISE_FINGERPRINT", "")
    except rasterio.errors.RasterioIOError:
        return ""
