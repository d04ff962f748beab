"""Throughput and memory of `utilise fill` on large stacks mosaicked from the real sample scenes.

Builds SIZE x SIZE x 10-date stacks by tiling the sample scenes (with their real cloud masks), runs
`fill` in a fresh process per case, and prints megapixel-dates per second, the time the network alone
spent on the same chips, their ratio (end-to-end overhead), and peak resident memory.

    python benchmarks/bench_fill.py [--sizes 2048 4096] [--method utilise|linear] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def build_stack(size: int, folder: Path, dates: int = 10) -> None:
    """Tile each sample scene (and its mask) to size x size; nodata borders are cropped first."""
    scenes = sorted(SAMPLE.glob("*_T34VCL.tif"))[:dates]
    for scene in scenes:
        with rasterio.open(scene) as src, rasterio.open(scene.with_name(scene.stem + "_mask.tif")) as msk:
            data, mask, profile = src.read()[:, 16:144, 8:136], msk.read()[:, 16:144, 8:136], src.profile
        reps = (1, -(-size // data.shape[1]), -(-size // data.shape[2]))
        big, big_mask = np.tile(data, reps)[:, :size, :size], np.tile(mask, reps)[:, :size, :size]
        profile.update(width=size, height=size, blockxsize=512, blockysize=512)
        with rasterio.open(folder / scene.name, "w", **profile) as dst:
            dst.write(big)
            for i, b in enumerate(["B2", "B3", "B4", "B8"], 1):
                dst.set_band_description(i, b)
        profile.update(count=1, dtype="uint8", nodata=None)
        with rasterio.open(folder / scene.with_name(scene.stem + "_mask.tif").name, "w", **profile) as dst:
            dst.write(big_mask)


def run_case(folder: Path, out: Path, method: str, checkpoint: str | None) -> dict:
    """fill in a child process; returns its report figures and peak RSS."""
    code = f"""
import json, resource, sys
from utilise_cli.fill import fill, FillOptions
r = fill({str(folder)!r}, {str(out)!r}, FillOptions(method={method!r}, checkpoint={checkpoint!r}))
print(json.dumps(dict(seconds=r.seconds, network=r.network_seconds, run=r.chips_run, skipped=r.chips_skipped,
                      rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--method", default="utilise")
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    print(f"{'size':>6s} {'method':>8s} {'chips run/skipped':>18s} {'total s':>8s} {'network s':>9s} "
          f"{'overhead':>8s} {'MPx-dates/s':>11s} {'peak RSS MB':>11s}")
    peaks = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder, out = Path(tmp) / "scenes", Path(tmp) / "out"
            folder.mkdir()
            build_stack(size, folder)
            r = run_case(folder, out, args.method, args.checkpoint)
        overhead = (r["seconds"] - r["network"]) / r["network"] if r["network"] > 0 else float("nan")
        peaks[size] = r["rss_mb"]
        print(f"{size:6d} {args.method:>8s} {r['run']:>9d}/{r['skipped']:<8d} {r['seconds']:8.1f} {r['network']:9.1f} "
              f"{overhead:8.0%} {size * size * 10 / 1e6 / r['seconds']:11.2f} {r['rss_mb']:11.0f}")
    if len(peaks) > 1:
        sizes = sorted(peaks)
        print(f"peak memory ratio {sizes[-1]} vs {sizes[0]}: {peaks[sizes[-1]] / peaks[sizes[0]]:.2f}x")


if __name__ == "__main__":
    main()
