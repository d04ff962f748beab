"""`utilise fill`: a folder of dated scenes (or a STAC search result) in, one cloud-free Cloud-Optimized GeoTIFF
per date and a STAC catalog of them out.

Data flow: scenes (:mod:`scenes`, or items :mod:`stac`) -> lazy cube (:mod:`cube`) -> a plan of chips (:mod:`plan`) -> network or
baseline per chip row (:mod:`inference`) -> overlap blending in row stripes (:mod:`stripes`) -> COGs
(:mod:`cog`). With a dask scheduler the chip rows are predicted on workers (:mod:`cluster`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import __version__
from .cog import FLAG_MEANING, StripeWriter, copy_threads, finish_all
from .atomic import disk_full, write_text
from .catalog import DatedOutput, write_catalog
from .cube import guess_mask_kind
from .errors import OutputError, SceneError
# With this module, not in the fill: the predictors need torch, whose import (1.3 s) is no part of a fill's time.
from .inference import Predictor
from .options import check_scheduler
from .plan import FillOptions, FillPlan, check_memory, load_predictor, plan_fill
from .resume import PROGRESS, resumable, suspend
from .stripes import FillReport, Quicklook, Writers, rows_to_run, run_stripes

__all__ = ["FillOptions", "FillReport", "fill"]

log = logging.getLogger(__name__)


def check_output_folder(out: Path) -> None:
    """Create ``out`` and prove it is writable, or raise OutputError."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".utilise-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{out}: cannot write there ({err.strerror or err}); choose another --out") from None


def _open_writers(plan: FillPlan, options: FillOptions, tags: dict[str, str], writers: Writers,
                  resume: bool = False) -> None:
    """Add a COG writer and a flags writer to ``writers`` for every date still to write (``resume``: reopen the
    partial files of an interrupted run; else, with one column panel, COGs built as the rows come)."""
    grid = plan.cube.grid
    streamed = not resume and len(plan.panels) == 1
    base_tags = {"UTILISE_VERSION": __version__, **tags,
                 "UTILISE_OBSERVED_PIXELS": "regenerated" if options.regenerate_all else "kept"}
    for i in plan.todo:
        scene = plan.scenes[i]
        scene_tags = {**base_tags, "ACQUISITION_DATE": scene.date.isoformat(),
                      "UTILISE_FINGERPRINT": plan.fingerprints[i],
                      "SOURCE_FILES": ",".join(p.name for p in scene.files)}
        if scene.items:
            scene_tags["STAC_ITEMS"] = ",".join(scene.items)
        writers[i] = (
            StripeWriter(plan.outputs[i], grid.crs, grid.transform, grid.width, grid.height, len(plan.bands),
                         options.dtype, plan.bands, scene_tags, "average", options.compress, resume, streamed),
            StripeWriter(plan.flags[i], grid.crs, grid.transform, grid.width, grid.height, 1, "uint8",
                         [f"filled: {FLAG_MEANING}"],
                         {**scene_tags, "FLAGS": FLAG_MEANING}, "nearest", options.compress, resume, streamed),
        )


def _write_catalog(out: Path, plan: FillPlan, tags: dict[str, str]) -> Path:
    """The STAC catalog of every date's outputs (this run's and those already there)."""
    properties = {"utilise:version": __version__,
                  **{f"utilise:{key.removeprefix('UTILISE_').lower()}": value for key, value in tags.items()}}
    outputs = [DatedOutput(s.date, cog, flags) for s, cog, flags in zip(plan.scenes, plan.outputs, plan.flags)]
    return write_catalog(out, outputs, properties, f"Cloud-free Sentinel-2 series filled by utilise from "
                                                   f"{plan.source.name}")


def _check_observed(plan: FillPlan, report: FillReport) -> None:
    """Refuse a scene with no observed pixel at all (nothing is written); warn about dates without one, which
    are written wholly from the other dates with every pixel flagged filled."""
    seen = report.observed_per_date
    if seen is None:
        return
    if not seen.any():
        cube = plan.cube
        kinds = sorted({rule.kind for rule in cube.rules})
        sample = np.asarray(cube.mask[0, ::4, ::4].values)
        guess = guess_mask_kind(sample)
        hint = (f"the masks look like {guess}: pass --mask-kind {guess}" if guess and guess not in kinds
                else "check --mask-kind, --scl-classes, --cloud-threshold and --nodata")
        raise SceneError(f"{plan.source}: no pixel of any date is observed (every one is "
                         f"occluded or no data with --mask-kind {'/'.join(kinds)}); {hint}")
    for i in np.flatnonzero(seen == 0):
        log.warning("%s: no observed pixel (fully cloudy or no data); written wholly from the other dates, every "
                    "pixel flagged filled", plan.scenes[i].date)


def choose_predictor(plan: FillPlan, network: Predictor, options: FillOptions, tags: dict[str, str],
                     report: FillReport) -> tuple[Predictor, FillOptions, dict[str, str]]:
    """--method auto: self-validate linear, adjusted and the network on the scene, and fill with the best.
    Returns the predictor, the options with the chosen method (for workers) and the output tags."""
    from .validation import candidate_predictors, select_method

    candidates = candidate_predictors(network)
    selection = select_method(plan, candidates, plan.batch_size)
    log.info("%s", selection.line())
    report.selection = selection.as_dict()
    chosen = selection.chosen
    tags = {**(tags if chosen == "utilise" else {}), "UTILISE_METHOD": f"auto: {chosen}",
            "UTILISE_SELF_VALIDATION": json.dumps(report.selection)}
    return candidates[chosen], replace(options, method=chosen), tags


@contextlib.contextmanager
def _collector_skips_older_objects() -> Iterator[None]:
    """While a fill runs, Python's cyclic garbage collector leaves alone the objects that existed before it
    (gc.freeze; unfrozen after). Its full collections otherwise walk every object of torch, xarray, dask and the
    other imports, about 250,000: 0.14 s of a 1024^2 x 10-date fill, where the fill's own objects take 6 ms.
    Nothing is done where objects are frozen already (by the caller, or an enclosing fill)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@_collector_skips_older_objects()
def fill(folder: str | Path, out: str | Path, options: FillOptions | None = None,
         progress: Callable[[int, int], None] | None = None, scheduler: str = "sync",
         predictor: Predictor | None = None) -> FillReport:
    """Fill every date of ``folder`` (a folder of scenes or a STAC JSON file) and write COGs and a STAC catalog
    (:mod:`catalog`) to ``out``; see :class:`FillOptions`.

    ``predictor`` (any :class:`~utilise_cli.inference.Predictor`) replaces the method of the options, in this
    process only (sync).

    ``progress(done_chips, total_chips)`` is called after every chip row. ``scheduler`` other than sync
    (see :func:`utilise_cli.cluster.dask_client`) predicts the chip rows on dask workers; this process blends
    and writes them in order, so the outputs are the same.
    """
    options = options or FillOptions()
    check_scheduler(scheduler)
    out = Path(out)
    start = time.perf_counter()
    choose = options.method == "auto" and predictor is None
    if predictor is None:
        predictor, tags = load_predictor(options)
    else:
        tags = {"UTILISE_METHOD": predictor.name}
    plan = plan_fill(folder, out, options, predictor)
    report = FillReport(outputs=[], skipped_outputs=[p for i, p in enumerate(plan.outputs) if i not in plan.todo])
    if plan.todo:
        check_memory(plan, options.max_memory_mb)
    if not plan.todo:
        log.info("all %d outputs already in %s; nothing to do (--overwrite to redo)", len(plan.outputs), out)
        return report
    check_output_folder(out)
    if choose:
        predictor, options, tags = choose_predictor(plan, predictor, options, tags, report)
    report.method = tags["UTILISE_METHOD"]
    done = resumable(out, plan, report)
    written = [done]  # how far the partial files go (panel, rows)
    writers: Writers = {}
    try:
        _open_writers(plan, options, tags, writers, resume=done != (0, 0))
        grid = plan.cube.grid
        quicklook = Quicklook(grid.height, grid.width, len(plan.scenes)) if options.preview else None
        track = functools.partial(written.__setitem__, 0)
        if scheduler in ("sync", "threads"):
            run_stripes(plan, predictor, options, writers, report, quicklook, progress, done=done, written=track)
        else:
            from .cluster import dask_client, predict_rows_on_cluster

            with dask_client(scheduler) as (client, threads):
                rows = predict_rows_on_cluster(client, plan, folder, out, options, threads, rows_to_run(plan, done))
                run_stripes(plan, predictor, options, writers, report, quicklook, progress, rows, done, track)
        _check_observed(plan, report)
        pairs = list(writers.values())
        threads = copy_threads(2 * len(pairs))
        log.info("copying %d outputs to COGs on %d thread%s", 2 * len(pairs), threads, "s" if threads > 1 else "")
        finished = finish_all([writer for pair in pairs for writer in pair], threads)
        report.outputs += finished[::2]
        for path in finished:
            log.info("wrote %s", path)
        report.catalog = _write_catalog(out, plan, tags)
        log.info("wrote %s", report.catalog)
        if quicklook is not None:
            from .pictures import save_fill_preview

            report.preview = save_fill_preview(quicklook.before, quicklook.after, quicklook.flags, plan.scenes,
                                               out / "preview.png")
            log.info("wrote %s", report.preview)
        write_text(out / "fill_report.json", json.dumps(
            {"method": report.method, "self_validation": report.selection, "outputs": [p.name for p in report.outputs],
             "chips_run": report.chips_run, "chips_passed_through": report.chips_skipped,
             "filled_pixel_dates": report.filled_pixels, "screened_pixel_dates": report.screened_pixels,
             "never_observed_pixels": report.never_observed_pixels},
            indent=1))
        (out / PROGRESS).unlink(missing_ok=True)
    except KeyboardInterrupt:
        suspend(out, plan, report, writers, written[0])
        raise
    except BaseException as err:
        full = disk_full(err, out)  # before the partial files go, freeing the space
        for cog, flags in writers.values():
            cog.abort()
            flags.abort()
        (out / PROGRESS).unlink(missing_ok=True)
        if full:
            raise OutputError(f"{out}: no space left on the device; free space (or choose another --out) and "
                              "rerun: the dates already finished are kept") from None
        raise
    report.seconds = time.perf_counter() - start
    return report
