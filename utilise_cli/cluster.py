"""dask.distributed for one large tile: its chip rows are predicted on the workers.

Each worker reads its own rows of a column panel (the overlap with the neighbouring rows included) and loads the
plan and the model once; the calling process takes the predictions in order, blends and writes them
(:func:`utilise_cli.stripes.run_stripes`), so the outputs are identical to a run in one process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

from .cores import set_threads
from .cube import read_rows
from .errors import OptionError, SceneError
from .plan import FillOptions, FillPlan, load_predictor, plan_fill
from .stripes import RowPrediction, predict_row

log = logging.getLogger(__name__)


def use_threads(threads: int) -> None:
    """Limit torch and this process's own thread pools (cores.set_threads) to ``threads`` threads in this worker
    (0 = leave their defaults)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
        set_threads(threads)


@contextmanager
def dask_client(scheduler: str) -> Iterator[tuple[Any, int]]:
    """(client, torch threads per task) for 'processes' / 'local:N' (a LocalCluster of single-threaded worker
    processes) or a scheduler address; closed after."""
    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler.startswith(("tcp://", "tls://", "ws://", "inproc://")):
        try:
            client = Client(scheduler, timeout="6s")
        except (OSError, TimeoutError) as err:
            raise OptionError(f"--scheduler {scheduler}: no dask scheduler answered within 6 s ({type(err).__name__}); "
                              "start one (dask scheduler) or check the address") from None
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


def predict_row_task(folder: str, out: str, options: FillOptions, panel: int, y0: int, threads: int
                     ) -> RowPrediction:
    """Predict the chip row starting at pixel row ``y0`` of column panel ``panel`` (runs in a worker; the plan
    and model are loaded once per worker and folder)."""
    key = repr((folder, out, options))
    with _WORKER_LOCK:
        if key not in _WORKER_STATE:
            use_threads(threads)
            predictor, _ = load_predictor(options)
            _WORKER_STATE.clear()
            _WORKER_STATE[key] = (plan_fill(folder, out, options, predictor), predictor)
        plan, predictor = _WORKER_STATE[key]
    y1 = min(y0 + plan.chip_size, plan.cube.grid.height)
    columns = plan.panels[panel]
    refl, obs = read_rows(plan.cube, y0, y1, columns.lo, columns.hi)
    return predict_row(plan, predictor, options, plan.cube.days, columns, refl, obs)


def predict_rows_on_cluster(client: Any, plan: FillPlan, folder: str | Path, out: str | Path, options: FillOptions,
                            threads: int, rows: list[tuple[int, int]]) -> Iterator[RowPrediction]:
    """The predictions of the chip rows ``rows`` ((panel, first pixel row) pairs, as
    :func:`utilise_cli.stripes.rows_to_run` orders them), in that order, computed on the cluster's workers with
    a look-ahead of two rows per worker (bounded memory here)."""
    pending = iter(rows)
    ahead = 2 * max(1, len(client.scheduler_info()["workers"]))

    def submit(row: tuple[int, int]) -> Any:
        return client.submit(predict_row_task, str(folder), str(out), options, *row, threads, pure=False)

    futures = deque(submit(row) for row in islice(pending, ahead))
    while futures:
        row = futures.popleft().result()
        following = next(pending, None)
        if following is not None:
            futures.append(submit(following))
        yield row
