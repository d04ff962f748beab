"""``utilise prepare``: read a source, screen its frames, write the clear series to a dataset file."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ..atomic import write_text
from ..errors import DatasetError
from .screening import ScreeningRule, SeriesReport, screen
from .sources import read_source
from .store import StoredSeries, write_dataset

log = logging.getLogger(__name__)


def report_dict(fmt: str, rule: ScreeningRule, reports: Sequence[SeriesReport]) -> dict[str, Any]:
    return {
        "format": fmt,
        "rule": asdict(rule),
        "series": [{**asdict(r), "kept_frames": r.kept_frames} for r in reports],
        "kept_series": sum(r.kept for r in reports),
        "kept_frames": sum(r.kept_frames for r in reports if r.kept),
        "dropped_frames": sum(len(r.frames) - r.kept_frames for r in reports),
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    """Human-readable summary: one line per series, one per dropped frame."""
    lines = []
    for s in report["series"]:
        verdict = "kept" if s["kept"] else "DROPPED"
        lines.append(f"{s['name']}: {verdict} ({s['reason']}); {s['library_masks']} cloudy dates kept as mask shapes")
        lines += [f"  {f['date']} dropped: {f['reason']}" for f in s["frames"] if not f["kept"]]
    lines.append(f"total: {report['kept_series']} series, {report['kept_frames']} clear frames kept, "
                 f"{report['dropped_frames']} frames dropped")
    return lines


def prepare(fmt: str, sources: Sequence[str | os.PathLike], out: str | os.PathLike,
            rule: ScreeningRule = ScreeningRule(), dry_run: bool = False, **reader_options: Any) -> dict[str, Any]:
    """Convert ``sources`` of format ``fmt`` into the dataset file ``out`` (see docs/DATASET_FORMAT.md).

    Returns the screening report (also stored in the file and written next to it as ``OUT.report.json``).
    Raises DatasetError, writing nothing, when no series keeps ``rule.min_frames`` clear frames.
    """
    out = Path(out)
    kept: list[StoredSeries] = []
    reports: list[SeriesReport] = []
    names: set[str] = set()
    for source in sources:
        for series in read_source(fmt, source, **reader_options):
            if series.length == 0:
                raise DatasetError(f"{source}: the series {series.name} holds no acquisition; pass a series with data")
            base, i = series.name, 1
            while series.name in names:
                i += 1
                series.name = f"{base}_{i}"
            names.add(series.name)
            clear, report = screen(series, rule)
            reports.append(report)
            log.info("%s: %s", series.name, report.reason)
            if clear is not None:
                kept.append(StoredSeries(clear))
    report = report_dict(fmt, rule, reports)
    if not kept:
        why = "; ".join(f"{r.name}: {r.reason}" for r in reports)
        raise DatasetError(f"{', '.join(map(str, sources))}: no series keeps {rule.min_frames} clear frames ({why}); "
                           "pass a longer or clearer series, or loosen --max-cover / --min-frames")
    if not dry_run:
        write_dataset(out, kept, kind="sequences", attrs={"sources": [str(s) for s in sources]}, report=report)
        write_text(out.with_name(out.name + ".report.json"), json.dumps(report, indent=1))
    return report
