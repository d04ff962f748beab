"""Speed-up of filling a folder of tiles with 2 dask worker processes over 1 (LocalCluster, same machine).

Builds TILES tiles of SIZE x SIZE x 10 dates from the real sample scenes (bench_fill.build_stack), fills them
with `fill_tiles` on local:1 (one worker using every core) and local:2 (two single-threaded workers), in
fresh output folders, and prints wall time and the ratio. Cluster start-up is included, as a user pays it.

    python benchmarks/bench_tiles.py [--tiles 4] [--size 512] [--method utilise|linear]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fill import build_stack  # noqa: E402

from utilise_cli.fill import FillOptions  # noqa: E402
from utilise_cli.tiles import fill_tiles  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--method", default="utilise")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tiles"
        for i in range(args.tiles):
            (root / f"tile{i}").mkdir(parents=True)
            build_stack(args.size, root / f"tile{i}")
        options = FillOptions(method=args.method)
        times = {}
        for scheduler in ("local:1", "local:2"):
            start = time.perf_counter()
            results = fill_tiles(root, Path(tmp) / scheduler.replace(":", "_"), options, scheduler)
            times[scheduler] = time.perf_counter() - start
            assert not any(r.error for r in results), results
        print(f"{args.tiles} tiles of {args.size} x {args.size} x 10 dates, method {args.method}")
        print(f"{'scheduler':12s} {'seconds':>8s} {'speed-up':>9s}")
        for scheduler, seconds in times.items():
            print(f"{scheduler:12s} {seconds:8.1f} {times['local:1'] / seconds:8.2f}x")


if __name__ == "__main__":
    main()
