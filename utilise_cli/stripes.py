"""The fill engine: chip rows predicted, blended with weight windows in a rolling row buffer, and written as
soon as no later chip row can touch them, one column panel (:func:`utilise_cli.chips.column_panels`) after the
other. Memory is bounded by one stripe of chips of one panel (T x C x chip x panel width), whatever the raster's
height and width.

Masks here are ``observed`` (True = a valid, cloud-free pixel), as everywhere on the fill path.
"""

from __future__ import annotations

import functools
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from .chips import Panel, blend_window, chip_batch, dates_to_fill
from .cog import FLAG_FILLED, FLAG_NEVER_OBSERVED, FLAG_OBSERVED, FLAG_SCREENED, StripeWriter, to_output_dtype
from .cores import each_on_threads
from .cube import read_stripe
from .network import one_heap, release_freed_memory
from .plan import FillOptions, FillPlan

if TYPE_CHECKING:
    from .inference import Predictor

Writers = dict[int, tuple[StripeWriter, StripeWriter]]  # date index -> (COG, flags sidecar)
WRITE_THREADS = 4  # at most


@dataclass
class FillReport:
    outputs: list[Path]
    skipped_outputs: list[Path]
    chips_run: int = 0
    chips_skipped: int = 0
    filled_pixels: int = 0  # pixel-dates filled (the screen's included)
    screened_pixels: int = 0  # of those, the ones only the cloud screen found
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
    """Decimated true-colour copies of input and output, and the flags, collected while rows stream past."""

    def __init__(self, height: int, width: int, t: int, size: int = 420) -> None:
        self.step = max(1, math.ceil(max(height, width) / size))
        h, w = math.ceil(height / self.step), math.ceil(width / self.step)
        self.before = np.full((t, 3, h, w), np.nan, np.float32)
        self.after = np.full((t, 3, h, w), np.nan, np.float32)
        self.flags = np.full((t, h, w), FLAG_NEVER_OBSERVED, np.uint8)

    def add(self, row0: int, col0: int, date: int, before: np.ndarray, after: np.ndarray, flags: np.ndarray
            ) -> None:
        """Pixels from (row0, col0) of one date: before, after C x h x w (bands B2, B3, B4, ... ), flags h x w."""
        rows = np.arange(row0, row0 + before.shape[-2])
        keep = rows % self.step == 0
        first = -col0 % self.step  # the first column of the panel on the quicklook's grid
        if keep.any() and first < before.shape[-1]:
            target = np.ix_(rows[keep] // self.step, np.arange(col0 + first, col0 + before.shape[-1], self.step)
                            // self.step)
            rgb = [2, 1, 0] if before.shape[0] >= 3 else [0] * 3
            for store, values in ((self.before, before), (self.after, after)):
                store[date][(slice(None), *target)] = values[rgb][:, keep, first:: self.step]
            self.flags[date][target] = flags[keep, first:: self.step]


@dataclass
class RowPrediction:
    """The predictions of one row of chips: (x0, T x C x h x w reflectance, the T dates to blend or None for all)
    for every chip that ran (empty when they went straight to the row buffer), the x0 of chips with nothing to
    fill, which pass their input through, and how many chips ran."""

    chips: list[tuple[int, np.ndarray, np.ndarray | None]]
    passed: list[int]
    network_seconds: float
    run: int


def predict_row(plan: FillPlan, predictor: Predictor, options: FillOptions, days: np.ndarray, panel: Panel,
                refl: np.ndarray, obs: np.ndarray,
                add: Callable[[int, np.ndarray, np.ndarray | None], None] | None = None,
                ) -> RowPrediction:
    """Run the predictor on the chips of one chip row of a panel: refl T x C x h x w (reflectance) and obs
    T x h x w of the panel's columns [lo, hi). Chips are named by their first raster column x0.

    With ``add``, each chip's values go to add(x0, values, dates) as soon as they exist (the passed-through
    inputs first, then the predictions, each in column order: the order of sums of the returned RowPrediction's
    use), so that a row's predictions are never all held at once. ``dates`` (T bool) are the chip's dates with
    something to fill, the only ones whose values count in a fill that keeps observed pixels (every other pixel
    of a date is its input or nodata in the output, whatever the sums say); None (``--regenerate-all``): all."""
    chip = plan.chip_size
    pending: list[tuple[int, np.ndarray | None]] = []
    passed = []
    for x0 in panel.cols:
        dates = None if options.regenerate_all else dates_to_fill(obs[:, :, x0 - panel.lo: x0 - panel.lo + chip])
        if dates is not None and not dates.any():
            passed.append(x0)
            continue
        pending.append((x0, dates))
    if add is not None:
        nothing = np.zeros(len(days), bool)
        for x0 in passed:
            add(x0, refl[:, :, :, x0 - panel.lo: x0 - panel.lo + chip], nothing)
    chips, seconds = [], 0.0
    for b in range(0, len(pending), plan.batch_size):
        batch = pending[b: b + plan.batch_size]
        starts = [x0 - panel.lo for x0, _ in batch]
        # Views of the stripe where the chips allow (np.stack's copies took 0.36 s of a 2048^2 fill).
        x, o = chip_batch(refl, starts, chip), chip_batch(obs, starts, chip)
        tick = time.perf_counter()
        pred = predictor(x, o, days)[..., :refl.shape[-2], :min(chip, refl.shape[-1])]
        seconds += time.perf_counter() - tick
        for (x0, dates), p in zip(batch, pred):
            if add is not None:
                add(x0, p, dates)
            else:
                chips.append((x0, p, dates))
    return RowPrediction(chips, passed, seconds, len(pending))


Position = tuple[int, int]  # (panel, raster rows of it written): how far a fill has gone


def rows_to_read(order: list[tuple[int, int]], k: int, chip: int, height: int) -> tuple[int, int]:
    """Raster rows [first, stop) to read for chip row ``order[k]`` (panel, first pixel row; see rows_to_run) of
    ``chip`` px in a raster ``height`` px high: all of its rows, or, after a chip row of the same panel, only
    those below that one (the row buffer still holds the rows they share)."""
    p, y0 = order[k]
    if k and order[k - 1][0] == p:
        return min(order[k - 1][1] + chip, height), min(y0 + chip, height)
    return y0, min(y0 + chip, height)


def rows_to_run(plan: FillPlan, done: Position = (0, 0)) -> list[tuple[int, int]]:
    """(panel, first pixel row) of the chip rows still to run, in the order they run (panel by panel, top to
    bottom): in the panel reached, those that contribute to its rows from ``done[1]`` on."""
    panel, rows = done
    return [(p, y0) for p in range(panel, len(plan.panels)) for y0 in plan.rows
            if p > panel or y0 + plan.chip_size > rows]


class _Deferred:
    """A task run when its result is asked for (once: run_stripes asks each pending read once)."""

    def __init__(self, func: Callable, args: tuple) -> None:
        self.result = functools.partial(func, *args)


class _InPlace:
    """An executor that runs each task when its result is asked for (reading without a thread): the next chip
    row is read after this one is written, so that the two rows' arrays are never held together."""

    def __enter__(self) -> "_InPlace":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, func: Callable, *args: object) -> _Deferred:
        return _Deferred(func, args)


class RowBuffer:
    """The rows of the raster not written yet, [start, start + held): weighted sums of predictions and the
    weights (blending), the decoded inputs, the observed flags (kept pixels) and the screen's additions.

    Arrays of ``capacity`` rows allocated once; rows taken are dropped (the rest moved to the front) when the next
    chip row comes, so that no stripe-sized array is allocated per chip row."""

    def __init__(self, dates: int, bands: int, width: int, start: int, capacity: int) -> None:
        self.start, self.held, self.taken = start, 0, 0
        self.acc = np.zeros((dates, bands, capacity, width), np.float32)
        self.wsum = np.zeros((capacity, width), np.float32)
        self.inputs = np.zeros((dates, bands, capacity, width), np.float32)
        self.observed = np.zeros((dates, capacity, width), bool)
        self.screened = np.zeros((dates, capacity, width), bool)

    def _arrays(self) -> list[tuple[np.ndarray, int]]:
        return [(self.acc, 2), (self.wsum, 0), (self.inputs, 2), (self.observed, 1), (self.screened, 1)]

    def _drop_taken(self) -> None:
        n, rest = self.taken, self.held - self.taken
        if n:
            for array, axis in self._arrays():
                view = np.moveaxis(array, axis, 0)
                view[:rest] = view[n:n + rest]  # numpy copies through a temporary only where the two overlap
        self.held, self.taken = rest, 0

    def extend(self, y0: int, refl: np.ndarray, obs: np.ndarray, screened: np.ndarray) -> None:
        """Hold the rows from raster row ``y0`` on that are not held yet (rows up to ``y0`` must be)."""
        self._drop_taken()
        held_end = self.start + self.held
        if y0 > held_end:
            raise ValueError(f"rows {held_end}-{y0} would be missing from the row buffer")
        y1 = y0 + refl.shape[2]
        if y1 <= held_end:
            return
        new = slice(max(held_end - y0, 0), y1 - y0)
        at = slice(self.held, self.held + new.stop - new.start)
        self.acc[:, :, at], self.wsum[at] = 0, 0
        self.inputs[:, :, at] = refl[:, :, new]
        self.observed[:, at], self.screened[:, at] = obs[:, new], screened[:, new]
        self.held = at.stop

    def rows(self, row0: int, row1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Held raster rows [row0, row1): inputs T x C x h x w, observed and screened T x h x w (views, valid until
        the next :meth:`extend`)."""
        if not self.start <= row0 <= row1 <= self.start + self.held:
            raise ValueError(f"rows {row0}-{row1} are not all held ({self.start}-{self.start + self.held})")
        at = slice(row0 - self.start, row1 - self.start)
        return self.inputs[:, :, at], self.observed[:, at], self.screened[:, at]

    def add(self, y0: int, x0: int, pred: np.ndarray, window: np.ndarray, dates: np.ndarray | None = None) -> None:
        accumulate(self.acc[:, :, :self.held], self.wsum[:self.held], y0 - self.start, x0, pred, window, dates)

    def take(self, stop: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows [start, stop) (first row, sums, weights, inputs, observed, screened), no longer held: views, valid
        until the next :meth:`extend`."""
        n, row0 = stop - self.start, self.start
        out = (row0, self.acc[:, :, :n], self.wsum[:n], self.inputs[:, :, :n], self.observed[:, :n],
               self.screened[:, :n])
        self.start, self.taken = stop, n
        return out


def run_stripes(plan: FillPlan, predictor: Predictor, options: FillOptions, writers: Writers, report: FillReport,
                quicklook: Quicklook | None, progress: Callable[[int, int], None] | None,
                row_predictions: Iterator[RowPrediction] | None = None, done: Position = (0, 0),
                written: Callable[[Position], None] | None = None) -> None:
    """Predict (here, or take ``row_predictions`` made elsewhere in the order of :func:`rows_to_run`), blend
    and write every row of every panel.

    ``done``: rows [0, done[1]) of panel done[0], and every panel before it, are already written (a resumed run):
    only the chip rows that reach below them run, and their sums start there, in the same order as in one
    uninterrupted run, so the outputs are identical. ``written(position)`` is called whenever the rows up to
    that position are written."""
    cube, grid = plan.cube, plan.cube.grid
    days = cube.days
    chip, rows = plan.chip_size, plan.rows
    window = blend_window(chip, plan.overlap)
    order = rows_to_run(plan, done)
    # Rows no later chip row of the panel touches once a chip row is in: up to the next chip row's first row.
    flush_after = dict(zip(rows, [*rows[1:], grid.height]))
    chips_done = plan.chips - sum(len(plan.panels[p].cols) for p, _ in order)
    # With the network on a GPU the next chip row is read (decompressed, decoded) in a thread while this one is
    # predicted: reading would otherwise be most of the time. On a CPU the network already uses every core, and
    # reading ahead measured slower and 15-20 % more memory (2-core CPU, 1024^2): read when needed there, after
    # the chip row before is written (2048^2 linear: peak 822-834 -> 772-784 MB; 8192^2: 973 -> 844 MB).
    device = getattr(predictor, "device", None)
    ahead = row_predictions is None and device is not None and device.type == "cuda"
    # Freed stripe memory goes back to the kernel after every chip row (2048^2 linear: 180 MB less peak, 2 % more
    # time), except for the network on a CPU, whose forward passes would then fault their pages in again (1024^2:
    # 9 % more time for 32 MB).
    release = release_freed_memory if device is None or device.type == "cuda" else (lambda: None)
    one_heap()  # the screen's threads would each keep a heap at its own peak
    buffer, current = None, -1
    with (ThreadPoolExecutor(max_workers=1) if ahead else _InPlace()) as reader:
        spans = [rows_to_read(order, k, chip, grid.height) for k in range(len(order))]

        def read(k: int) -> Future | _Deferred:
            panel = plan.panels[order[k][0]]
            return reader.submit(read_stripe, cube, *spans[k], panel.lo, panel.hi)

        pending = read(0) if order else None
        for k, (p, y0) in enumerate(order):
            panel = plan.panels[p]
            # The last chip row's arrays, and views of the last panel's buffer, go before the next are made.
            below = refl = obs = held = None
            if p != current:
                buffer = None
                buffer, current = _panel_buffer(plan, panel, done[1] if p == done[0] else 0), p
            first, stop = spans[k]
            below = pending.result()
            if k + 1 < len(order):
                pending = read(k + 1)
            buffer.extend(first, *below)
            # The chip row: the rows it shares with the one before, still held, and the rows just read.
            refl, obs, _ = below if first == y0 else buffer.rows(y0, stop)

            def add(x0: int, values: np.ndarray, dates: np.ndarray | None) -> None:
                # Only the dates predict_row names: blending at 2048^2 x 10 dates, utilise, 0.84 -> 0.48 s with
                # outputs equal bit for bit (2-core AMD EPYC).
                buffer.add(y0, x0 - panel.lo, values, window, dates)

            if row_predictions is None:
                row = predict_row(plan, predictor, options, days, panel, refl, obs, add=add)
            else:
                row = next(row_predictions)
                # The same order of sums as in one process: outputs do not depend on where rows were predicted.
                nothing = np.zeros(len(days), bool)
                for x0 in row.passed:
                    add(x0, refl[:, :, :, x0 - panel.lo: x0 - panel.lo + chip], nothing)
                for x0, values, dates in row.chips:
                    add(x0, values, dates)
            report.chips_skipped += len(row.passed)
            report.chips_run += row.run
            report.network_seconds += row.network_seconds
            flush_to = flush_after[y0]
            if flush_to > buffer.start:
                row0, *held = buffer.take(flush_to)
                write_rows(row0, panel.col0, *(a[..., panel.owned] for a in held), options, writers, report,
                           quicklook)
                if written:
                    written((p, flush_to) if flush_to < grid.height else (p + 1, 0))
            release()
            chips_done += len(panel.cols)
            if progress:  # after the rows are written: an interruption here loses none of this chip row's work
                progress(chips_done, plan.chips)


def _panel_buffer(plan: FillPlan, panel: Panel, start: int) -> RowBuffer:
    """The row buffer of a panel whose rows [0, start) are written: it holds at most one chip row, plus (resumed
    run) the rows from ``start`` up to the first chip row that runs."""
    height = plan.cube.grid.height
    first = next((y0 for y0 in plan.rows if y0 + plan.chip_size > start), start)
    capacity = min(plan.chip_size, height) + max(0, first - start)
    return RowBuffer(len(plan.scenes), len(plan.bands), panel.width, start, capacity)


def accumulate(acc: np.ndarray, wsum: np.ndarray, row: int, x0: int, pred: np.ndarray, window: np.ndarray,
               dates: np.ndarray | None = None) -> None:
    """Add a chip's prediction T x C x h x w, weighted by ``window``, to the buffer at (row, x0); the part of a
    chip above the buffer (row < 0: rows already written by an interrupted run) is left out.

    ``dates`` (T bool, None = all): the dates whose values are added; the weights are added whatever it says."""
    if row < 0:
        pred, window, row = pred[..., -row:, :], window[-row:], 0
    h, w = pred.shape[-2:]
    win = window[:h, :w]
    wsum[row:row + h, x0:x0 + w] += win
    target: tuple = (slice(None), slice(None), slice(row, row + h), slice(x0, x0 + w))
    if dates is not None and not dates.all():
        if not dates.any():
            return
        picked = np.flatnonzero(dates)  # numpy gathers, adds and scatters them as fast as a loop over dates
        pred, target = pred[picked], (picked, *target[1:])
    weighted = np.multiply(pred, win)
    # No value where a pixel is never observed: zeroed in place. np.nan_to_num took 2.9 instead of 0.4 ms a chip
    # (it looks for infinities too, in more passes; 2-core AMD EPYC).
    np.copyto(weighted, 0, where=np.isnan(weighted))
    acc[target] += weighted


def write_rows(row0: int, col0: int, acc: np.ndarray, wsum: np.ndarray, inputs: np.ndarray, observed: np.ndarray,
               screened: np.ndarray, options: FillOptions, writers: Writers, report: FillReport,
               quicklook: Quicklook | None) -> None:
    """Normalise the blended pixels from (row0, col0), keep observed ones, flag filled ones (the screen's with
    their own value) and never-observed ones, and write every date, on up to WRITE_THREADS threads (each date has
    files of its own; numpy and GDAL's compression release the GIL); the temporaries are one date's per thread."""
    never = ~observed.any(axis=0)
    flags = np.where(observed, np.uint8(FLAG_OBSERVED), np.uint8(FLAG_FILLED))  # no int64 array on the way
    flags[screened & ~observed] = FLAG_SCREENED
    flags[:, never] = FLAG_NEVER_OBSERVED
    report.filled_pixels += int(((flags == FLAG_FILLED) | (flags == FLAG_SCREENED)).sum())
    report.screened_pixels += int((flags == FLAG_SCREENED).sum())
    counts = observed.sum(axis=(1, 2))
    report.observed_per_date = counts if report.observed_per_date is None else report.observed_per_date + counts
    report.never_observed_pixels += int(never.sum())

    def one_date(i: int) -> None:
        result = acc[i] / wsum
        if not options.regenerate_all:  # in place: np.where took twice as long (10 dates of 96 x 2048 px: 12 ms)
            np.copyto(result, inputs[i], where=observed[i])
        result[:, never] = np.nan
        if i in writers:
            cog, flag_writer = writers[i]
            cog.write_rows(row0, to_output_dtype(result, options.dtype), col0)
            flag_writer.write_rows(row0, flags[i][None], col0)
        if quicklook is not None:
            quicklook.add(row0, col0, i, inputs[i], result, flags[i])

    each_on_threads(one_date, range(len(observed)) if quicklook is not None else writers, WRITE_THREADS,
                    "utilise-write")
