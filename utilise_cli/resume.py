"""Resuming an interrupted fill: the progress record kept beside the hidden partial files.

Ctrl-C closes the partial files (so that the rows they hold are on disk) and records how far they go, with the
plan's dates and fingerprints; the next run of the same command checks the record against its own plan and the
files, and goes on from there (:func:`utilise_cli.stripes.run_stripes` with ``done``). A hard kill leaves no
record, and the next run starts again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .atomic import write_text
from .cog import partial_name
from .plan import FillPlan
from .stripes import FillReport, Writers

log = logging.getLogger(__name__)

PROGRESS = ".utilise-progress.json"  # beside the partial files: what an interrupted run had written


def resumable(out: Path, plan: FillPlan, report: FillReport) -> int:
    """Rows [0, N) that an interrupted run of the same plan wrote into partial files that are still there: N,
    with that run's counts put back into ``report``; else 0, and any leftover partial files are removed."""
    record_path = out / PROGRESS
    try:
        record = json.loads(record_path.read_text())
        same = (record["todo"] == plan.todo and record["fingerprints"] == [plan.fingerprints[i] for i in plan.todo]
                and all(partial_name(p).is_file() for i in plan.todo for p in (plan.outputs[i], plan.flags[i])))
    except (OSError, ValueError, KeyError):
        same = False
    if same:
        report.observed_per_date = np.asarray(record["observed_per_date"])
        report.filled_pixels, report.never_observed_pixels = record["filled"], record["never_observed"]
        report.screened_pixels = record.get("screened", 0)
        log.info("resuming an interrupted run from row %d of %d", record["rows"], plan.cube.grid.height)
        return int(record["rows"])
    for stale in out.glob(partial_name(Path("*")).name):
        stale.unlink()
    record_path.unlink(missing_ok=True)
    return 0


def suspend(out: Path, plan: FillPlan, report: FillReport, writers: Writers, rows: int) -> None:
    """After an interruption: close the partial files (so that what they hold is on disk), keep them, and record
    how far they go, for the next run of the same command to resume."""
    for cog, flags in writers.values():
        cog.suspend()
        flags.suspend()
    if rows and report.observed_per_date is not None:
        write_text(out / PROGRESS, json.dumps({
            "todo": plan.todo, "fingerprints": [plan.fingerprints[i] for i in plan.todo], "rows": rows,
            "observed_per_date": report.observed_per_date.tolist(), "filled": report.filled_pixels,
            "screened": report.screened_pixels,
            "never_observed": report.never_observed_pixels}))
