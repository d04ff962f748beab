"""What a fill run will do, worked out before any pixel is read: options, the predictor, bands, the cube,
chip positions, outputs and a cost estimate."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import rasterio

from . import __version__
from .chips import chip_starts
from .cube import SceneCube, open_folder
from .errors import CheckpointError, OutputError, SceneError
from .inference import BaselinePredictor, NetworkPredictor, Predictor, resolve_precision
from .options import FillOptions
from .scenes import Scene
from .sentinel2 import DEFAULT_BANDS, band_key

log = logging.getLogger(__name__)

# Measured with benchmarks/bench_model.py on the 2-core CI machine: seconds per 10 dates of a 128 x 128 chip.
_SECONDS_PER_CHIP_128_T10_CPU = 0.8


@dataclass
class FillPlan:
    """What a fill run would do: inputs, grid, chip starts (pixels) and rough cost."""

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

    @property
    def scenes(self) -> list[Scene]:
        return self.cube.scenes

    @property
    def chips(self) -> int:
        return len(self.rows) * len(self.cols)


def output_paths(out: Path, scene: Scene) -> tuple[Path, Path]:
    """Final COG path and its 'filled' flags sidecar for one date."""
    stem = f"{scene.date:%Y%m%d}_filled"
    return out / f"{stem}.tif", out / f"{stem}_flags.tif"


def load_predictor(options: FillOptions) -> tuple[Predictor, dict[str, str]]:
    """The network (or baseline) to fill with, and the tags that identify it in the outputs."""
    if options.method not in ("utilise", "auto"):
        return BaselinePredictor(options.method), {"UTILISE_METHOD": options.method}
    from .weights import resolve_checkpoint

    checkpoint = resolve_checkpoint(options.checkpoint)
    model = _cached_model(str(checkpoint), options.device)
    if model.metadata.get("status"):
        log.warning("%s: %s", checkpoint.name, model.metadata["status"])
    window = options.time_window or int(model.metadata.get("max_dates", 0) or 0)
    device = next(model.parameters()).device
    precision = resolve_precision(options.precision, device)
    if options.precision == "auto":
        log.info("precision auto: %s on %s%s", precision, device.type,
                 " (the CPU has native bf16)" if precision == "bf16" and device.type == "cpu" else "")
    tags = {"UTILISE_METHOD": options.method, "UTILISE_CHECKPOINT": checkpoint.name,
            "UTILISE_CHECKPOINT_SHA256": str(model.metadata.get("checkpoint_sha256", ""))}
    tags["UTILISE_PRECISION"] = precision
    return NetworkPredictor(model, window=window, precision=precision), tags


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


def plan_fill(folder: str | Path, out: str | Path, options: FillOptions,
              predictor: Predictor | None = None) -> FillPlan:
    """Read headers, check inputs and outputs, and work out chips and cost, without reading pixels."""
    folder, out = Path(folder), Path(out)
    if out.resolve() == folder.resolve() or folder.resolve() in out.resolve().parents:
        raise OutputError(f"{out}: inside the input folder {folder}; choose an --out outside it (outputs there "
                          "would be read as scenes on the next run)")
    bands = resolve_bands(options, predictor)
    cube = open_folder(folder, bands, options.read, chunk_rows=options.chip_size)
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
    t, c = len(cube.scenes), len(bands)
    chips = len(rows) * len(cols)
    per_chip = _SECONDS_PER_CHIP_128_T10_CPU * (options.chip_size / 128) ** 2 * max(t, 1) / 10
    seconds = chips * per_chip if options.method in ("utilise", "auto") else chips * 0.01 * t
    stripe_mb = 4 * t * (2 * c + 2) * min(options.chip_size, grid.height) * grid.width / 1e6
    networked = options.method in ("utilise", "auto")
    model_mb = 4 * options.batch_size * t * 400 * options.chip_size ** 2 / 1e6 if networked else 0
    return FillPlan(cube, bands, options.chip_size, options.overlap, rows, cols, [p[0] for p in paths],
                    [p[1] for p in paths], todo, seconds, stripe_mb * 2 + model_mb, prints)


def fingerprint(options: FillOptions, predictor: Predictor | None, bands: list[str], cube: SceneCube,
                scene: Scene) -> str:
    """A digest of what decides one date's output pixels: the date's input files (name, size, modification
    time) and those of every date (a fill uses them all), the method and checkpoint, decoding, mask and chip
    options, precision, output type. Stored in the output's UTILISE_FINGERPRINT tag."""
    model = getattr(predictor, "model", None)
    files = sorted({(p.name, p.stat().st_size, p.stat().st_mtime_ns) for s in cube.scenes
                    for p in [*s.files, s.mask.path]})
    what = {"version": __version__, "date": scene.date.isoformat(), "files": files, "bands": bands,
            "method": options.method, "predictor": getattr(predictor, "name", ""),
            "checkpoint": model.metadata.get("checkpoint_sha256", "") if model is not None else "",
            "read": {**asdict(options.read), "scale": cube.scale, "offset": cube.offset},
            "chip": [options.chip_size, options.overlap, options.time_window], "precision": options.precision,
            "dtype": options.dtype, "regenerate_all": options.regenerate_all}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _made_with(cog: Path) -> str:
    """The fingerprint tag of an existing output ('' when there is none or it cannot be read)."""
    try:
        with rasterio.open(cog) as src:
            return src.tags().get("UTILISE_FINGERPRINT", "")
    except rasterio.errors.RasterioIOError:
        return ""
