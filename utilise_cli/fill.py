"""`utilise fill`: a folder of dated scenes in, one cloud-free Cloud-Optimized GeoTIFF per date out.

Data flow: scenes (:mod:`scenes`) -> lazy cube (:mod:`cube`) -> row stripes of chips (:mod:`chips`) ->
network or baseline (:mod:`inference`) -> weighted overlap blending in a rolling row buffer -> finished
rows streamed to GeoTIFF and turned into COGs (:mod:`cog`). Memory is bounded by one stripe of chips
(T x C x chip x W), whatever the raster height.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from . import __version__
from .chips import blend_window, chip_starts
from .cog import FLAG_FILLED, FLAG_NEVER_OBSERVED, FLAG_OBSERVED, StripeWriter, to_output_dtype
from .cube import MaskRule, SceneCube, open_cube, read_rows
from .errors import CheckpointError, OutputError, SceneError
from .inference import BaselinePredictor, NetworkPredictor, Predictor
from .scenes import DEFAULT_BANDS, DEFAULT_MASK_PATTERN, Scene, band_key, discover_scenes

log = logging.getLogger(__name__)

# Measured with benchmarks/bench_model.py on the 2-core CI machine: seconds per 10 dates of a 128 x 128 chip.
_SECONDS_PER_CHIP_128_T10_CPU = 0.8


@dataclass
class FillOptions:
    """Options of :func:`fill`; units in the field comments."""

    bands: Sequence[str] | None = None  # band names to fill; default: the checkpoint's bands, else B2 B3 B4 B8
    method: str = "utilise"  # 'utilise' (the network) or a baseline of baselines.METHODS
    checkpoint: str | Path | None = None  # default: the weights shipped with the package
    chip_size: int = 128  # pixels; a multiple of 2 ** (levels - 1)
    overlap: int = 32  # pixels shared by neighbouring chips, blended
    batch_size: int = 4  # chips per forward pass
    device: str = "auto"  # auto | cpu | cuda
    time_window: int = 0  # dates per network pass (0 = the whole series at once)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; see README for the accuracy cost)
    regenerate_all: bool = False  # also replace observed pixels by the network's output
    dtype: str = "uint16"  # uint16 DN (scale 1e-4, nodata 0) or float32 (NaN nodata)
    scale: float = 1e-4  # reflectance = DN * scale + offset
    offset: float = 0.0
    nodata: float | None = None  # input nodata DN; default: the file's, else 0
    mask_pattern: str = DEFAULT_MASK_PATTERN
    date_pattern: str | None = None
    mask_kind: str = "auto"  # auto | binary | scl | probability
    mask_band: str | None = None
    cloud_threshold: float = 50.0  # probability masks: occluded at or above this value
    scl_classes: Sequence[int] = (3, 8, 9, 10)
    mask_buffer: int = 0  # pixels every cloud mask grows by (a square), for rims the masks miss
    align: bool = False  # reproject scenes on other grids onto the first scene's grid
    overwrite: bool = False
    preview: bool = False  # write a before/after quicklook PNG


@dataclass
class FillPlan:
    """What a fill run would do: inputs, grid, chips and rough cost."""

    scenes: list[Scene]
    cube: SceneCube
    bands: list[str]
    chip_size: int
    overlap: int
    chips: int
    outputs: list[Path]
    flags: list[Path]
    todo: list[int]
    estimated_seconds: float
    estimated_memory_mb: float


@dataclass
class FillReport:
    outputs: list[Path]
    skipped_outputs: list[Path]
    chips_run: int = 0
    chips_skipped: int = 0
    filled_pixels: int = 0
    never_observed_pixels: int = 0
    seconds: float = 0.0
    network_seconds: float = 0.0
    preview: Path | None = None
    messages: list[str] = field(default_factory=list)


def output_paths(out: Path, scene: Scene) -> tuple[Path, Path]:
    """Final COG path and its 'filled' flags sidecar for one date."""
    stem = f"{scene.date:%Y%m%d}_filled"
    return out / f"{stem}.tif", out / f"{stem}_flags.tif"


def load_predictor(options: FillOptions) -> tuple[Predictor, dict[str, str]]:
    """The network (or baseline) to fill with, and the tags that identify it in the outputs."""
    if options.method != "utilise":
        return BaselinePredictor(options.method), {"UTILISE_METHOD": options.method}
    from .weights import default_checkpoint

    checkpoint = options.checkpoint or default_checkpoint()
    model = _cached_model(str(checkpoint), options.device)
    if model.metadata.get("status"):
        log.warning("%s: %s", Path(checkpoint).name, model.metadata["status"])
    window = options.time_window or int(model.metadata.get("max_dates", 0) or 0)
    tags = {"UTILISE_METHOD": "utilise", "UTILISE_CHECKPOINT": Path(checkpoint).name,
            "UTILISE_CHECKPOINT_SHA256": str(model.metadata.get("checkpoint_sha256", ""))}
    return NetworkPredictor(model, window=window, precision=options.precision), tags


@functools.lru_cache(maxsize=2)
def _cached_model(checkpoint: str, device: str):
    """One loaded network per process and checkpoint: a dask worker filling many tiles loads it once."""
    from .network import load_model

    return load_model(checkpoint, device=device)


def resolve_bands(options: FillOptions, predictor: Predictor | None) -> list[str]:
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
    if options.chip_size % 8 or options.chip_size < 8:
        raise SceneError(f"--chip-size {options.chip_size} must be a positive multiple of 8 (e.g. 128 or 256)")
    if not 0 <= options.overlap < options.chip_size // 2 + 1:
        raise SceneError(f"--overlap {options.overlap} must be between 0 and half the chip size")
    bands = resolve_bands(options, predictor)
    scenes = discover_scenes(folder, bands, options.mask_pattern, options.date_pattern, options.mask_kind,
                             options.mask_band)
    dates = [s.date for s in scenes]
    rules = [MaskRule(s.mask_kind, options.cloud_threshold, tuple(options.scl_classes), options.mask_buffer)
             for s in scenes]
    cube = open_cube(scenes, rules, options.scale, options.offset, options.nodata, options.align,
                     chunk_rows=options.chip_size)
    grid = cube.grid
    rows = chip_starts(grid.height, options.chip_size, options.overlap)
    cols = chip_starts(grid.width, options.chip_size, options.overlap)
    paths = [output_paths(out, s) for s in scenes]
    todo = [i for i, (cog, flags) in enumerate(paths)
            if options.overwrite or not (cog.exists() and flags.exists())]
    t, c = len(dates), len(bands)
    chips = len(rows) * len(cols)
    per_chip = _SECONDS_PER_CHIP_128_T10_CPU * (options.chip_size / 128) ** 2 * max(t, 1) / 10
    seconds = chips * per_chip if options.method == "utilise" else chips * 0.01 * t
    stripe_mb = 4 * t * (2 * c + 2) * min(options.chip_size, grid.height) * grid.width / 1e6
    model_mb = 4 * options.batch_size * t * 400 * options.chip_size ** 2 / 1e6 if options.method == "utilise" else 0
    return FillPlan(scenes, cube, bands, options.chip_size, options.overlap, chips, [p[0] for p in paths],
                    [p[1] for p in paths], todo, seconds, stripe_mb * 2 + model_mb)


def check_output_folder(out: Path) -> None:
    """Create ``out`` and prove it is writable, or raise OutputError."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".utilise-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{out}: cannot write there ({err.strerror or err}); choose another --out") from None


def _pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Edge-pad the last two axes up to height x width (rasters smaller than one chip)."""
    ph, pw = height - array.shape[-2], width - array.shape[-1]
    if ph <= 0 and pw <= 0:
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, max(ph, 0)), (0, max(pw, 0))]
    return np.pad(array, pad, mode="edge")


def fill(folder: str | Path, out: str | Path, options: FillOptions | None = None,
         progress: Callable[[int, int], None] | None = None, scheduler: str = "sync") -> FillReport:
    """Fill every date of ``folder`` and write COGs to ``out``; see :class:`FillOptions`.

    ``progress(done_chips, total_chips)`` is called after every chip row. ``scheduler`` other than sync
    (see :func:`utilise_cli.tiles.dask_client`) predicts the chip rows on dask workers; this process blends
    and writes them in order, so the outputs are the same.
    """
    options = options or FillOptions()
    out = Path(out)
    start = time.perf_counter()
    predictor, tags = load_predictor(options)
    plan = plan_fill(folder, out, options, predictor)
    report = FillReport(outputs=[], skipped_outputs=[plan.outputs[i] for i in range(len(plan.outputs))
                                                     if i not in plan.todo])
    if not plan.todo:
        log.info("all %d outputs already in %s; nothing to do (--overwrite to redo)", len(plan.outputs), out)
        return report
    check_output_folder(out)
    for stale in out.glob(".*.partial.tif"):
        stale.unlink()
    cube, grid, t = plan.cube, plan.cube.grid, len(plan.scenes)
    days = cube.days
    base_tags = {"UTILISE_VERSION": __version__, **tags,
                 "UTILISE_OBSERVED_PIXELS": "regenerated" if options.regenerate_all else "kept"}
    writers: dict[int, tuple[StripeWriter, StripeWriter]] = {}
    try:
        for i in plan.todo:
            scene = plan.scenes[i]
            scene_tags = {**base_tags, "ACQUISITION_DATE": scene.date.isoformat(),
                          "SOURCE_FILES": ",".join(p.name for p in scene.files)}
            writers[i] = (
                StripeWriter(plan.outputs[i], grid.crs, grid.transform, grid.width, grid.height, len(plan.bands),
                             options.dtype, plan.bands, scene_tags, "average"),
                StripeWriter(plan.flags[i], grid.crs, grid.transform, grid.width, grid.height, 1, "uint8",
                             ["filled: 0 observed, 1 filled, 255 never observed"],
                             {**scene_tags, "FLAGS": "0=observed,1=filled,255=never observed"}, "nearest"),
            )
        quicklook = _Quicklook(grid.height, grid.width, t) if options.preview else None
        if scheduler in ("sync", "threads"):
            _run_stripes(plan, predictor, options, days, writers, report, quicklook, progress)
        else:
            from .tiles import dask_client, predict_rows_on_cluster

            with dask_client(scheduler) as (client, threads):
                rows = predict_rows_on_cluster(client, plan, folder, out, options, threads)
                _run_stripes(plan, predictor, options, days, writers, report, quicklook, progress, rows)
        for i, (cog, flags) in writers.items():
            report.outputs.append(cog.finish())
            flags.finish()
            log.info("wrote %s", cog.path)
        if quicklook is not None:
            from .pictures import save_fill_preview

            report.preview = save_fill_preview(quicklook.before, quicklook.after, plan.scenes, out / "preview.png")
            log.info("wrote %s", report.preview)
    except BaseException:
        for cog, flags in writers.values():
            cog.abort()
            flags.abort()
        raise
    report.seconds = time.perf_counter() - start
    return report


class _Quicklook:
    """Decimated true-colour copies of input and output, collected while rows stream past."""

    def __init__(self, height: int, width: int, t: int, size: int = 160) -> None:
        self.step = max(1, math.ceil(max(height, width) / size))
        h, w = math.ceil(height / self.step), math.ceil(width / self.step)
        self.before = np.full((t, 3, h, w), np.nan, np.float32)
        self.after = np.full((t, 3, h, w), np.nan, np.float32)

    def add(self, row0: int, before: np.ndarray, after: np.ndarray) -> None:
        rows = np.arange(row0, row0 + before.shape[-2])
        keep = rows % self.step == 0
        if keep.any():
            target = rows[keep] // self.step
            rgb = [2, 1, 0] if before.shape[1] >= 3 else [0] * 3
            self.before[:, :, target] = before[:, rgb][:, :, keep, :: self.step]
            self.after[:, :, target] = after[:, rgb][:, :, keep, :: self.step]


@dataclass
class RowPrediction:
    """The predictions of one row of chips: (x0, T x C x h x w reflectance) for every chip that ran, and
    the x0 of chips with nothing to fill, which pass their input through."""

    chips: list[tuple[int, np.ndarray]]
    passed: list[int]
    network_seconds: float


def predict_row(plan: FillPlan, predictor: Predictor, options: FillOptions, days: np.ndarray,
                refl: np.ndarray, obs: np.ndarray) -> RowPrediction:
    """Run the predictor on the chips of one chip row: refl T x C x h x W (reflectance), obs T x h x W."""
    chip = plan.chip_size
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []
    passed = []
    for x0 in chip_starts(plan.cube.grid.width, chip, plan.overlap):
        x1 = min(x0 + chip, plan.cube.grid.width)
        chip_obs = obs[:, :, x0:x1]
        # Only pixels observed on some dates but not all have anything to fill (never-observed
        # pixels become nodata whatever the network says).
        if not options.regenerate_all and not (chip_obs.any(axis=0) & ~chip_obs.all(axis=0)).any():
            passed.append(x0)
            continue
        pending.append((x0, refl[:, :, :, x0:x1], chip_obs))
    chips, seconds = [], 0.0
    for b in range(0, len(pending), options.batch_size):
        batch = pending[b: b + options.batch_size]
        h, w = batch[0][1].shape[-2:]
        x = np.stack([_pad_to(item[1], chip, chip) for item in batch])
        o = np.stack([_pad_to(item[2], chip, chip) for item in batch])
        tick = time.perf_counter()
        pred = predictor(x, o, days)[..., :h, :w]
        seconds += time.perf_counter() - tick
        chips += [(x0, p) for (x0, _, _), p in zip(batch, pred)]
    return RowPrediction(chips, passed, seconds)


def _run_stripes(plan: FillPlan, predictor: Predictor, options: FillOptions, days: np.ndarray,
                 writers: dict[int, tuple[StripeWriter, StripeWriter]], report: FillReport,
                 quicklook: _Quicklook | None, progress: Callable[[int, int], None] | None,
                 row_predictions: Iterator[RowPrediction] | None = None) -> None:
    """Predict (here, or take ``row_predictions`` made elsewhere in row order), blend and write every row."""
    cube, grid = plan.cube, plan.cube.grid
    chip = plan.chip_size
    rows = chip_starts(grid.height, chip, plan.overlap)
    cols = chip_starts(grid.width, chip, plan.overlap)
    window = blend_window(chip, plan.overlap)
    t, c = len(plan.scenes), len(plan.bands)
    # Rolling buffer over rows [buf0, buf0 + rows held): sums of weighted predictions, weights, inputs.
    buf0 = 0
    acc = np.zeros((t, c, 0, grid.width), np.float32)
    wsum = np.zeros((0, grid.width), np.float32)
    inputs = np.zeros((t, c, 0, grid.width), np.float32)
    observed = np.zeros((t, 0, grid.width), bool)
    done = 0
    for r, y0 in enumerate(rows):
        y1 = min(y0 + chip, grid.height)
        refl, obs = read_rows(cube, y0, y1)
        held_end = buf0 + acc.shape[2]
        if y1 > held_end:  # append the new rows to the buffer
            new = slice(held_end - y0, y1 - y0)
            acc = np.concatenate([acc, np.zeros((t, c, y1 - held_end, grid.width), np.float32)], axis=2)
            wsum = np.concatenate([wsum, np.zeros((y1 - held_end, grid.width), np.float32)], axis=0)
            inputs = np.concatenate([inputs, refl[:, :, new]], axis=2)
            observed = np.concatenate([observed, obs[:, new]], axis=1)
        if row_predictions is None:
            row = predict_row(plan, predictor, options, days, refl, obs)
        else:
            row = next(row_predictions)
        # The same order of sums as in one process: outputs do not depend on where rows were predicted.
        for x0 in row.passed:
            _accumulate(acc, wsum, y0 - buf0, x0, refl[:, :, :, x0:x0 + chip], window)
        for x0, p in row.chips:
            _accumulate(acc, wsum, y0 - buf0, x0, p, window)
        report.chips_skipped += len(row.passed)
        report.chips_run += len(row.chips)
        report.network_seconds += row.network_seconds
        done += len(cols)
        if progress:
            progress(done, plan.chips)
        flush_to = rows[r + 1] if r + 1 < len(rows) else grid.height
        n = flush_to - buf0
        if n > 0:
            _write_rows(buf0, acc[:, :, :n], wsum[:n], inputs[:, :, :n], observed[:, :n], options, writers,
                        report, quicklook)
            acc, wsum, inputs, observed = acc[:, :, n:], wsum[n:], inputs[:, :, n:], observed[:, n:]
            buf0 = flush_to


def _accumulate(acc: np.ndarray, wsum: np.ndarray, row: int, x0: int, pred: np.ndarray, window: np.ndarray) -> None:
    h, w = pred.shape[-2:]
    win = window[:h, :w]
    acc[:, :, row:row + h, x0:x0 + w] += np.nan_to_num(pred) * win
    wsum[row:row + h, x0:x0 + w] += win


def _write_rows(row0: int, acc: np.ndarray, wsum: np.ndarray, inputs: np.ndarray, observed: np.ndarray,
                options: FillOptions, writers: dict[int, tuple[StripeWriter, StripeWriter]], report: FillReport,
                quicklook: _Quicklook | None) -> None:
    """Normalise the blended rows, keep observed pixels, mark never-observed ones, and write every date."""
    result = acc / wsum
    if not options.regenerate_all:
        result = np.where(observed[:, None], inputs, result)
    never = ~observed.any(axis=0)
    result[:, :, never] = np.nan
    flags = np.where(observed, FLAG_OBSERVED, FLAG_FILLED).astype(np.uint8)
    flags[:, never] = FLAG_NEVER_OBSERVED
    report.filled_pixels += int((flags == FLAG_FILLED).sum())
    report.never_observed_pixels += int(never.sum())
    for i, (cog, flag_writer) in writers.items():
        cog.write_rows(row0, to_output_dtype(result[i], options.dtype))
        flag_writer.write_rows(row0, flags[i][None])
    if quicklook is not None:
        quicklook.add(row0, inputs, result)
