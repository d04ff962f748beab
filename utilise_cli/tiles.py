"""Scale-out on dask.distributed (a LocalCluster of worker processes or a running scheduler).

Many tiles: a folder of tile folders (each a folder of dated scenes) is filled one tile per task. Each tile is
written by :func:`utilise_cli.fill.fill` into OUT/<tile>; a tile whose every date is done is skipped, so a
rerun after a crash or a killed worker finishes only what is missing. Outputs are identical to filling each
tile on its own: the same code runs, only elsewhere.

One large tile: its chip rows are predicted on the workers (each reads its own rows, the overlap with the
neighbouring rows included, and loads the model once), while the calling process blends and writes them in
row order, so the outputs are identical to a run in one process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator

from .chips import chip_starts
from .cube import read_rows
from .errors import SceneError, UtiliseError
from .fill import FillOptions, FillPlan, FillReport, RowPrediction, fill, load_predictor, plan_fill, predict_row
from .scenes import RASTER_SUFFIXES

log = logging.getLogger(__name__)


def _has_rasters(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in RASTER_SUFFIXES for p in folder.iterdir())


def find_tiles(folder: str | Path) -> list[Path] | None:
    """The tile folders of ``folder`` when it is a folder of tiles (no scenes of its own, subfolders with
    scenes); None when it is a folder of scenes."""
    folder = Path(folder)
    if not folder.is_dir() or _has_rasters(folder):
        return None
    tiles = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and _has_rasters(p))
    return tiles or None


@dataclass
class TileResult:
    tile: str
    outputs: int
    skipped: int
    chips_run: int
    seconds: float
    error: str = ""


def _use_threads(threads: int) -> None:
    """Limit torch to ``threads`` threads in this worker (0 = leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def fill_tile(tile: str, out: str, options: FillOptions, threads: int = 0) -> TileResult:
    """Fill one tile (runs in a worker). Project errors come back as text so one bad tile does not stop the rest."""
    _use_threads(threads)
    try:
        report: FillReport = fill(tile, out, options)
    except UtiliseError as err:
        return TileResult(Path(tile).name, 0, 0, 0, 0.0, str(err))
    return TileResult(Path(tile).name, len(report.outputs), len(report.skipped_outputs), report.chips_run,
                      report.seconds)


@contextmanager
def dask_client(scheduler: str) -> Iterator[tuple[Any, int]]:
    """(client, torch threads per task) for 'processes' / 'local:N' (a LocalCluster of single-threaded worker
    processes) or a scheduler address; closed after."""
    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler.startswith(("tcp://", "tls://", "ws://", "inproc://")):
        client = Client(scheduler)
    else:
        workers = os.cpu_count() or 1
        if ":" in scheduler:
            try:
                workers = int(scheduler.split(":", 1)[1])
            except ValueError:
                raise SceneError(f"--scheduler {scheduler!r}: expected local:N with a whole number N") from None
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        log.info("dask LocalCluster with %d worker processes; dashboard %s", workers, cluster.dashboard_link)
        client = Client(cluster)
    try:
        workers = max(1, len(client.scheduler_info()["workers"]))
        # LocalCluster workers share this machine's cores; a remote cluster's workers keep torch's default.
        yield client, max(1, (os.cpu_count() or 1) // workers) if cluster is not None else 0
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


_WORKER_STATE: dict[str, tuple[Any, Any]] = {}
_WORKER_LOCK = threading.Lock()  # a worker may run several tasks at once in threads


def predict_row_task(folder: str, out: str, options: FillOptions, y0: int, threads: int) -> RowPrediction:
    """Predict the chip row starting at pixel row ``y0`` (runs in a worker; the plan and model are loaded
    once per worker and folder)."""
    key = repr((folder, out, options))
    with _WORKER_LOCK:
        if key not in _WORKER_STATE:
            _use_threads(threads)
            predictor, _ = load_predictor(options)
            _WORKER_STATE.clear()
            _WORKER_STATE[key] = (plan_fill(folder, out, options, predictor), predictor)
        plan, predictor = _WORKER_STATE[key]
    y1 = min(y0 + plan.chip_size, plan.cube.grid.height)
    refl, obs = read_rows(plan.cube, y0, y1)
    return predict_row(plan, predictor, options, plan.cube.days, refl, obs)


def predict_rows_on_cluster(client: Any, plan: FillPlan, folder: str | Path, out: str | Path, options: FillOptions,
                            threads: int) -> Iterator[RowPrediction]:
    """The predictions of every chip row of ``plan``, in row order, computed on the cluster's workers with a
    look-ahead of two rows per worker (bounded memory here)."""
    rows = iter(chip_starts(plan.cube.grid.height, plan.chip_size, plan.overlap))
    ahead = 2 * max(1, len(client.scheduler_info()["workers"]))

    def submit(y0: int) -> Any:
        return client.submit(predict_row_task, str(folder), str(out), options, y0, threads, pure=False)

    futures = deque(submit(y0) for y0 in islice(rows, ahead))
    while futures:
        row = futures.popleft().result()
        following = next(rows, None)
        if following is not None:
            futures.append(submit(following))
        yield row


def fill_tiles(folder: str | Path, out: str | Path, options: FillOptions, scheduler: str = "sync",
               progress: Callable[[int, int], None] | None = None) -> list[TileResult]:
    """Fill every tile of ``folder`` into ``out/<tile>``. ``scheduler``: sync (this process), processes or
    local:N (a dask LocalCluster of N single-threaded worker processes), or a scheduler address."""
    tiles = find_tiles(folder)
    if not tiles:
        raise SceneError(f"{folder}: no tile folders with scenes inside; pass a folder of tile folders")
    out = Path(out)
    jobs = [(str(t), str(out / t.name)) for t in tiles]
    results: list[TileResult] = []
    if scheduler in ("sync", "threads"):
        for i, (tile, target) in enumerate(jobs):
            results.append(fill_tile(tile, target, options))
            if progress:
                progress(i + 1, len(jobs))
    else:
        from dask.distributed import as_completed

        with dask_client(scheduler) as (client, threads):
            futures = [client.submit(fill_tile, tile, target, options, threads, pure=False) for tile, target in jobs]
            for i, future in enumerate(as_completed(futures)):
                results.append(future.result())
                if progress:
                    progress(i + 1, len(jobs))
    results.sort(key=lambda r: r.tile)
    for r in results:
        if r.error:
            log.error("tile %s failed: %s", r.tile, r.error)
        else:
            log.info("tile %s: %d dates written, %d already done, %d chips, %.1f s", r.tile, r.outputs, r.skipped,
                     r.chips_run, r.seconds)
    return results
