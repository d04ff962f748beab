"""Where a fill's time goes besides the network: seconds per phase of `utilise fill`, beside the network's own.

Builds a SIZE x SIZE x 10-date stack tiled from the sample scenes (as `benchmarks/bench_fill.py` does) and fills
it in a fresh process per method, with timers wrapped around the stages the fill calls (module attributes
replaced in that process only; the fill itself is unchanged): opening the scenes (the plan), the self-validation
(method auto), reading chip rows (decoding included) and the cloud screen inside it, stacking chips and
blending them into the row buffer, writing rows to the partial files, the COG copies and the STAC catalog. What
the timers do not cover is printed as "the rest". Each phase is also given as a share of the network's own time,
the measure of issue #17's bound ("the fill within 10 % of the network's own time"). Fills run with one network
worker (fill's default), the phases one after the other: with more (--network-workers) they overlap the network.
The time outside the network is also split by when it comes: before the first prediction (loading, opening the
scenes, the first chip row's read), between predictions (what a pipeline could overlap with the network) and
after the last (the last rows' writing, the COG copies, the catalog), each with the cores it keeps busy.

    python benchmarks/bench_phases.py [--size 2048] [--method utilise,auto,linear]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fill import build_stack  # noqa: E402

# (label, module, attribute): the timers, outermost first. A phase that runs inside another (the screen inside
# reading) is printed indented and left out of the sums.
PHASES = [
    ("opening the scenes (plan)", "utilise_cli.fill", "plan_fill"),
    ("self-validation (auto)", "utilise_cli.fill", "choose_predictor"),
    ("reading chip rows", "utilise_cli.stripes", "read_stripe"),
    ("  the cloud screen (also in validation)", "utilise_cli.cube", "screen"),
    ("  the files' reads (also in validation)", "utilise_cli.windows", "WindowReader.read"),
    ("chip rows' inputs (shared rows and new)", "utilise_cli.stripes", "ChipRowInputs.next"),
    ("row buffer: new rows in", "utilise_cli.stripes", "RowBuffer.extend"),
    ("blending chips in", "utilise_cli.stripes", "RowBuffer.add"),
    # Collecting a chip row runs the network (one worker: each batch as it is collected) and blends each chip in
    # (RowBuffer.add): what it does besides is stacking.
    ("stacking chips for the network", "utilise_cli.stripes", "PendingRow.collect"),
    ("writing rows", "utilise_cli.stripes", "write_rows"),
    ("COG copies", "utilise_cli.fill", "finish_all"),
    ("STAC catalog", "utilise_cli.fill", "_write_catalog"),
]

CHILD = """
import functools, importlib, json, sys, time
from collections import Counter

phases, seconds = json.loads(sys.argv[3]), Counter()

def timed(label, func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - start
    return wrapper

for label, module, attribute in phases:
    owner = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, timed(label, getattr(owner, name)))

# Each prediction's wall and process CPU times (start and end): what the fill does before the first, between them
# and after the last, and on how many cores. (One network worker: nothing else runs while the network does.)
import utilise_cli.stripes as stripes
marks = []

def marked(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return func(*args, **kwargs)
        finally:
            marks.append((wall, time.perf_counter(), cpu, time.process_time()))
    return wrapper

stripes._predict_batch = marked(stripes._predict_batch)

from utilise_cli.fill import FillOptions, fill

wall, cpu = time.perf_counter(), time.process_time()
report = fill(sys.argv[1], sys.argv[2], FillOptions(method=sys.argv[4], overwrite=True))
wall_end, cpu_end = time.perf_counter(), time.process_time()
spans = {}
if marks:
    inside = [sum(m[1] - m[0] for m in marks), sum(m[3] - m[2] for m in marks)]
    spans = {"before the first prediction": [marks[0][0] - wall, marks[0][2] - cpu],
             "between predictions": [marks[-1][1] - marks[0][0] - inside[0], marks[-1][3] - marks[0][2] - inside[1]],
             "after the last": [wall_end - marks[-1][1], cpu_end - marks[-1][3]]}
print(json.dumps(dict(total=report.seconds, network=report.network_seconds, used=report.method, phases=seconds,
                      spans=spans)))
"""


def run(folder: Path, out: Path, method: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(out), json.dumps(PHASES), method],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="stack side in pixels (default 2048)")
    parser.add_argument("--method", default="utilise", help="method(s), separated by commas (default utilise)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scenes"
        folder.mkdir()
        build_stack(args.size, folder)
        for method in args.method.split(","):
            r = run(folder, Path(tmp) / f"out_{method}", method)
            network, phases = r["network"], {label: r["phases"].get(label, 0.0) for label, _, _ in PHASES}
            phases["stacking chips for the network"] -= network + phases["blending chips in"]
            phases["the rest"] = r["total"] - network - sum(v for k, v in phases.items() if not k.startswith(" "))
            print(f"\n{args.size}^2 x 10 dates, method {method} (filled with {r['used']}): "
                  f"{r['total']:.2f} s, the network {network:.2f} s, "
                  f"everything else {r['total'] - network:.2f} s ({(r['total'] - network) / network:.0%})")
            print(f"  {'phase':40s} {'seconds':>8s} {'of the network':>15s}")
            for label, sec in phases.items():
                print(f"  {label:40s} {sec:8.2f} {sec / network:14.1%}")
            # What could overlap the network (between its predictions) and what cannot (before and after them),
            # and how many cores each keeps busy (process CPU over wall; an OpenMP thread spinning on after a
            # prediction counts as busy).
            print(f"  {'outside the network':40s} {'seconds':>8s} {'of the network':>15s} {'cores busy':>11s}")
            for label, (sec, core_sec) in r["spans"].items():
                print(f"  {label:40s} {sec:8.2f} {sec / network:14.1%} {core_sec / sec if sec else 0:11.2f}")


if __name__ == "__main__":
    main()
