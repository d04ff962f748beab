"""Reading stripes of scenes: the direct window reader (`utilise_cli.windows`) against reading through dask.

Builds SIZE x SIZE x 10-date stacks tiled from the sample scenes (with their masks; 512 px tiles, deflate,
pixel-interleaved, as `benchmarks/bench_fill.py` does), and in a fresh process per case reads STRIPES chip rows
of 128 px of one 2048-px column panel the way `fill` does (`cube.read_stripe`: the screen's and the buffer's
margins, decoding, the mask buffer and the cloud screen), after one warm-up read. Printed: seconds per stripe
(wall, and CPU time over every thread) and the process's peak resident memory, and the direct reader's
figures as ratios to dask's. With --no-screen the stripes are read without the cloud screen (reading and
decoding alone).

    python benchmarks/bench_read.py [--sizes 2048 8192] [--stripes 12] [--no-screen]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fill import PEAK_MB, build_stack  # noqa: E402

CHILD = PEAK_MB + """
import dataclasses, json, os, sys, time
from utilise_cli.cube import open_folder, read_stripe
from utilise_cli.options import ReadOptions

folder, direct, stripes, screen = sys.argv[1], sys.argv[2] == "direct", int(sys.argv[3]), sys.argv[4] == "1"
cube = open_folder(folder, ["B2", "B3", "B4", "B8"], ReadOptions(screen=screen), chunk_rows=128)
if not direct:
    cube = dataclasses.replace(cube, windows=None)
col0, col1 = (2048, 4096) if cube.grid.width > 2048 else (0, cube.grid.width)
read_stripe(cube, 128, 256, col0, col1)  # warm-up: opens the files
start, times = time.perf_counter(), os.times()
for y0 in range(256, 256 + 128 * stripes, 128):
    read_stripe(cube, y0, min(y0 + 128, cube.grid.height), col0, col1)
seconds = (time.perf_counter() - start) / stripes
cpu = (os.times().user - times.user + os.times().system - times.system) / stripes
print(json.dumps(dict(seconds=seconds, cpu=cpu, rss_mb=peak_mb())))
"""


def run_case(folder: Path, direct: bool, stripes: int, screen: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), "direct" if direct else "dask", str(stripes),
                          "1" if screen else "0"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192], help="stack side(s) in pixels")
    parser.add_argument("--stripes", type=int, default=12, help="chip rows of 128 px read per case")
    parser.add_argument("--no-screen", action="store_true", help="read without the cloud screen")
    args = parser.parse_args()
    stripes = min(args.stripes, (min(args.sizes) - 256) // 128)
    print(f"{'size':>6s} {'reader':>7s} {'s / stripe':>10s} {'CPU s':>6s} {'peak RSS MB':>11s}   "
          f"({stripes} stripes of 128 x 2048 px, 10 dates, screen {'off' if args.no_screen else 'on'})")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            build_stack(size, folder)
            cases = {}
            for direct in (False, True):
                r = cases[direct] = run_case(folder, direct, stripes, not args.no_screen)
                print(f"{size:6d} {'direct' if direct else 'dask':>7s} {r['seconds']:10.3f} {r['cpu']:6.3f} "
                      f"{r['rss_mb']:11.0f}")
            print(f"{size:6d} direct / dask: time {cases[True]['seconds'] / cases[False]['seconds']:.2f}x, "
                  f"peak {cases[True]['rss_mb'] / cases[False]['rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
