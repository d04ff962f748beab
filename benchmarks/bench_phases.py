"""Where a fill's time goes besides the network: seconds per phase of `utilise fill`, beside the network's own.

Builds a SIZE x SIZE x 10-date stack tiled from the sample scenes (as `benchmarks/bench_fill.py` does) and fills
it in a fresh process per method, with timers wrapped around the stages the fill calls (module attributes
replaced in that process only; the fill itself is unchanged): opening the scenes (the plan), the self-validation
(method auto), reading chip rows (decoding included) and the cloud screen inside it, stacking chips and
blending them into the row buffer, writing rows to the partial files, the COG copies and the STAC catalog. What
the timers do not cover is printed as "the rest". Each phase is also given as a share of the network's own time,
the measure of issue #17's bound ("the fill within 10 % of the network's own time"). Fills run with one network
worker (fill's default), the phases one after the other: with more (--network-workers) they overlap the network.

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

from utilise_cli.fill import FillOptions, fill

report = fill(sys.argv[1], sys.argv[2], FillOptions(method=sys.argv[4], overwrite=True))
print(json.dumps(dict(total=report.seconds, network=report.network_seconds, used=report.method, phases=seconds)))
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


if __name__ == "__main__":
    main()
