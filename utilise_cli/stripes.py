"""The fill engine: chip rows predicted, blended with weight windows in a rolling row buffer, and written as
soon as no later chip row can touch them. Memory is bounded by one stripe of chips (T x C x chip x W),
whatever the raster height.

Masks here are ``observed`` (True = a valid, cloud-free pixel), as everywhere on the fill path.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .chips import blend_window
from .cog import FLAG_FILLED, FLAG_NEVER_OBSERVED, FLAG_OBSERVED, StripeWriter, to_output_dtype
from .cube import read_rows
from .inference import Predictor
from .plan import FillOptions, FillPlan

Writers = dict[int, tuple[StripeWriter, StripeWriter]]  # date index -> (COG, flags sidecar)


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
    catalog: Path | None = None  # OUT/catalog.json
    method: str = ""  # what filled the scene (with --method auto: the self-validation's choice)
    observed_per_date: np.ndarray | None = None  # T: valid, cloud-free pixels each date has
    selection: dict[str, object] | None = None  # the self-validation scores (method auto)
    messages: list[str] = field(default_factory=list)


class Quicklook:
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


def _pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Edge-pad the last two axes up to height x width (rasters smaller than one chip)."""
    ph, pw = height - array.shape[-2], width - array.shape[-1]
    if ph <= 0 and pw <= 0:
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, max(ph, 0)), (0, max(pw, 0))]
    return np.pad(array, pad, mode="edge")


def predict_row(plan: FillPlan, predictor: Predictor, options: FillOptions, days: np.ndarray,
                refl: np.ndarray, obs: np.ndarray) -> RowPrediction:
    """Run the predictor on the chips of one chip row: refl T x C x h x W (reflectance), obs T x h x W."""
    chip, width = plan.chip_size, plan.cube.grid.width
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []
    passed = []
    for x0 in plan.cols:
        x1 = min(x0 + chip, width)
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


def rows_to_run(plan: FillPlan, done: int) -> list[int]:
    """The chip rows (their first pixel rows) that still contribute to the raster rows from ``done`` on."""
    return [y0 for y0 in plan.rows if y0 + plan.chip_size > done]


def run_stripes(plan: FillPlan, predictor: Predictor, options: FillOptions, writers: Writers, report: FillReport,
                quicklook: Quicklook | None, progress: Callable[[int, int], None] | None,
                row_predictions: Iterator[RowPrediction] | None = None, done: int = 0,
                written: Callable[[int], None] | None = None) -> None:
    """Predict (here, or take ``row_predictions`` made elsewhere in row order), blend and write every row.

    ``done``: raster rows [0, done) are already written (a resumed run): only the chip rows that reach below
    it run, and their sums start at ``done``, in the same order as in one uninterrupted run, so the outputs
    are identical. ``written(rows)`` is called whenever rows [0, rows) are written."""
    cube, grid = plan.cube, plan.cube.grid
    days = cube.days
    chip, rows = plan.chip_size, plan.rows
    window = blend_window(chip, plan.overlap)
    t, c = len(plan.scenes), len(plan.bands)
    # Rolling buffer over rows [buf0, buf0 + rows held): sums of weighted predictions, weights, inputs.
    buf0 = done
    acc = np.zeros((t, c, 0, grid.width), np.float32)
    wsum = np.zeros((0, grid.width), np.float32)
    inputs = np.zeros((t, c, 0, grid.width), np.float32)
    observed = np.zeros((t, 0, grid.width), bool)
    todo = rows_to_run(plan, done)
    chips_done = (len(rows) - len(todo)) * len(plan.cols)
    for r in range(len(rows) - len(todo), len(rows)):
        y0 = rows[r]
        y1 = min(y0 + chip, grid.height)
        refl, obs = read_rows(cube, y0, y1)
        held_end = buf0 + acc.shape[2]
        if y1 > held_end:  # append the new rows to the buffer
            new = slice(max(held_end - y0, 0), y1 - y0)
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
            accumulate(acc, wsum, y0 - buf0, x0, refl[:, :, :, x0:x0 + chip], window)
        for x0, p in row.chips:
            accumulate(acc, wsum, y0 - buf0, x0, p, window)
        report.chips_skipped += len(row.passed)
        report.chips_run += len(row.chips)
        report.network_seconds += row.network_seconds
        flush_to = rows[r + 1] if r + 1 < len(rows) else grid.height
        n = flush_to - buf0
        if n > 0:
            write_rows(buf0, acc[:, :, :n], wsum[:n], inputs[:, :, :n], observed[:, :n], options, writers,
                       report, quicklook)
            acc, wsum, inputs, observed = acc[:, :, n:], wsum[n:], inputs[:, :, n:], observed[:, n:]
            buf0 = flush_to
            if written:
                written(buf0)
        chips_done += len(plan.cols)
        if progress:  # after the rows are written: an interruption here loses none of this chip row's work
            progress(chips_done, plan.chips)


def accumulate(acc: np.ndarray, wsum: np.ndarray, row: int, x0: int, pred: np.ndarray, window: np.ndarray) -> None:
    """Add a chip's prediction T x C x h x w, weighted by ``window``, to the buffer at (row, x0); the part of a
    chip above the buffer (row < 0: rows already written by an interrupted run) is left out."""
    if row < 0:
        pred, window, row = pred[..., -row:, :], window[-row:], 0
    h, w = pred.shape[-2:]
    win = window[:h, :w]
    acc[:, :, row:row + h, x0:x0 + w] += np.nan_to_num(pred) * win
    wsum[row:row + h, x0:x0 + w] += win


def write_rows(row0: int, acc: np.ndarray, wsum: np.ndarray, inputs: np.ndarray, observed: np.ndarray,
               options: FillOptions, writers: Writers, report: FillReport, quicklook: Quicklook | None) -> None:
    """Normalise the blended rows, keep observed pixels, mark never-observed ones, and write every date."""
    result = acc / wsum
    if not options.regenerate_all:
        result = np.where(observed[:, None], inputs, result)
    never = ~observed.any(axis=0)
    result[:, :, never] = np.nan
    flags = np.where(observed, FLAG_OBSERVED, FLAG_FILLED).astype(np.uint8)
    flags[:, never] = FLAG_NEVER_OBSERVED
    report.filled_pixels += int((flags == FLAG_FILLED).sum())
    counts = observed.sum(axis=(1, 2))
    report.observed_per_date = counts if report.observed_per_date is None else report.observed_per_date + counts
    report.never_observed_pixels += int(never.sum())
    for i, (cog, flag_writer) in writers.items():
        cog.write_rows(row0, to_output_dtype(result[i], options.dtype))
        flag_writer.write_rows(row0, flags[i][None])
    if quicklook is not None:
        quicklook.add(row0, inputs, result)
