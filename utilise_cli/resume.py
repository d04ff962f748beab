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
from .stripes import FillReport, Position, Writers

log = logging.getLogger(__name__)

PROGRESS = ".utilise-progress.json"  # beside the partial files: what an interrupted run had written


def resumable(out: Path, plan: FillPlan, report: FillReport) -> Position:
    """How far an interrupted run of the same plan got in the partial files that are still there: (panel P,
    rows N): every panel before P and rows [0, N) of P are written; that run's counts are put back into
    ``report``. Else (0, 0), and any leftover partial files are removed."""
    record_path = out / PROGRESS
    try:
        record = json.loads(record_path.read_text())
        same = (record["todo"] == plan.todo and record["fingerprints"] == [plan.fingerprints[i] for i in plan.todo]
                and record["panels"] == [[p.col0, p.col1] for p in plan.panels]
                and all(partial_name(p).is_file() for i in plan.todo for p in (plan.outputs[i], plan.flags[i])))
    except (OSError, ValueError, KeyError):
        same = False
    if same:
        report.observed_per_date = np.asarray(record["observed_per_date"])
        report.filled_pixels, report.never_observed_pixels = record["filled"], record["never_observed"]
        report.screened_pixels = record.get("screened", 0)
        panel, rows = int(record["panel"]), int(record["rows"])
        where = f" of column panel {panel + 1} of {len(plan.panels)}" if len(plan.panels) > 1 else ""
        log.info("resuming an interrupted run from row %d of %d%s", rows, plan.cube.grid.height, where)
        return panel, rows
    for stale in out.glob(partial_name(Path("*")).name):
        stale.unlink()
    record_path.unlink(missing_ok=True)
    return 0, 0


def suspend(out: Path, plan: FillPlan, report: FillReport, writers: Writers, done: Position) -> None:
    """After an interruption: close the partial files (so that what they hold is on disk), keep them, and record
    how far they go, for the next run of the same command to resume."""
    for cog, flags in writers.values():
        cog.suspend()
        flags.suspend()
    if done != (0, 0) and report.observed_per_date is not None:
        write_text(out / PROGRESS, json.dumps({
            "todo": plan.todo, "fingerprints": [plan.fingerprints[i] for i in plan.todo],
            "panels": [[p.col0, p.col1] for p in plan.panels], "panel": done[0], "rows": done[1],
            "observed_per_date": report.observed_per_date.tolist(), "filled": report.filled_pixels,
            "screened": report.screened_pixels,
            "never_observed": report.never_observed_pixels}))
