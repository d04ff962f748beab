"""Throughput, memory and worker speed-up of `utilise fill` on stacks mosaicked from the real sample scenes.

Default: builds SIZE x SIZE x 10-date stacks by tiling the sample scenes (with their real cloud masks), runs
`fill` in a fresh process per case, and prints megapixel-dates per second, the time the network alone
spent on the same chips, their ratio (end-to-end overhead), and peak resident memory.

With --workers: builds TILES tiles of SIZE x SIZE x 10 dates and one tile of ONE_TILE x ONE_TILE, and fills
them with a dask LocalCluster of 1 worker process (using every core) and of 2 single-threaded worker
processes: the folder of tiles (a task per tile) and the single tile (its chip rows on the workers; also in
this process, sync), in fresh output folders, and prints wall times and the speed-up of 2 workers over 1.
Cluster start-up is included, as a user pays it.

With --panel-widths W1,W2 (0 = the whole width, the way fills ran before column panels) and --network-workers
N1,N2: every method with each panel width and worker count, side by side, each peak and time as a ratio to the
first case's.

    python benchmarks/bench_fill.py [--sizes 2048 4096] [--method utilise|linear] [--checkpoint PATH]
                                    [--panel-widths 0,2048] [--network-workers 1,2]
    python benchmarks/bench_fill.py --workers [--tiles 4] [--sizes 256] [--one-tile 768] [--method utilise|linear]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


NOISE_DN = 5  # sensor-like noise (standard deviation, DN) each tile's copy gets on each date


def _mosaic(crop: np.ndarray, size: int, orientations: np.ndarray) -> np.ndarray:
    """C x size x size from a C x n x n crop: tile (i, j) is the crop in orientation orientations[i, j] (0-7:
    rotations by 90 degrees, then the same mirrored)."""
    n = crop.shape[-1]
    out = np.empty((crop.shape[0], orientations.shape[0] * n, orientations.shape[1] * n), crop.dtype)
    for (i, j), k in np.ndenumerate(orientations):
        tile = np.rot90(crop, k % 4, axes=(1, 2))
        out[:, i * n:(i + 1) * n, j * n:(j + 1) * n] = tile[:, :, ::-1] if k >= 4 else tile
    return out[:, :size, :size]


def build_stack(size: int, folder: Path, dates: int = 10) -> None:
    """Mosaic each sample scene (and its mask) to size x size from its 128-px crop without the nodata borders.

    Each tile of the mosaic is the crop in one of its eight orientations (the same on every date, so that each
    pixel's series is a real one), and each date's bands get noise of NOISE_DN (seeded): plain tiling repeated
    the crop byte for byte, which DEFLATE with a predictor packed to 0.19 of the raw size where real 128-px
    crops of ../shared pack to 0.72-0.77, and flattered every write and COG copy. This mosaic packs to 0.72."""
    scenes = sorted(SAMPLE.glob("*_T34VCL.tif"))[:dates]
    tiles = -(-size // 128)
    orientations = np.random.default_rng(0).integers(0, 8, (tiles, tiles))
    for d, scene in enumerate(scenes):
        with rasterio.open(scene) as src, rasterio.open(scene.with_name(scene.stem + "_mask.tif")) as msk:
            data, mask, profile = src.read()[:, 16:144, 8:136], msk.read()[:, 16:144, 8:136], src.profile
        big, big_mask = _mosaic(data, size, orientations), _mosaic(mask, size, orientations)
        rng = np.random.default_rng(1 + d)
        for band in big:  # a band at a time: the noise of 8192^2 in float32 is 268 MB
            noisy = band + NOISE_DN * rng.standard_normal(band.shape, dtype=np.float32)
            np.copyto(band, np.clip(np.rint(noisy), 1, 65535), where=band > 0, casting="unsafe")
        profile.update(width=size, height=size, blockxsize=512, blockysize=512)
        with rasterio.open(folder / scene.name, "w", **profile) as dst:
            dst.write(big)
            for i, b in enumerate(["B2", "B3", "B4", "B8"], 1):
                dst.set_band_description(i, b)
        profile.update(count=1, dtype="uint8", nodata=None)
        with rasterio.open(folder / scene.with_name(scene.stem + "_mask.tif").name, "w", **profile) as dst:
            dst.write(big_mask)


# The child's own peak resident memory. Not ru_maxrss: Linux carries a process's peak across fork and exec, so a
# child's ru_maxrss starts at its parent's peak, and the parent has just built the stacks (8192^2: 1246 MB, which
# every 8192^2 fill then "measured").
PEAK_MB = """
def peak_mb():
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""


def run_case(folder: Path, out: Path, method: str, checkpoint: str | None, panel_width: int | None = None,
             network_workers: int | None = None) -> dict:
    """fill in a child process; returns its report figures and peak RSS. ``panel_width``, ``network_workers``
    None: the default."""
    panel = "" if panel_width is None else f", panel_width={panel_width}"
    panel += "" if network_workers is None else f", network_workers={network_workers}"
    code = PEAK_MB + f"""
import json, sys
from utilise_cli.fill import fill, FillOptions
options = FillOptions(method={method!r}, checkpoint={checkpoint!r}, overwrite=True{panel})
r = fill({str(folder)!r}, {str(out)!r}, options)
rss = peak_mb()  # the fill's peak, before the estimate below
from utilise_cli.plan import load_predictor, plan_fill
estimate = plan_fill({str(folder)!r}, {str(out)!r}, options, load_predictor(options)[0]).estimated_memory_mb
print(json.dumps(dict(seconds=r.seconds, network=r.network_seconds, run=r.chips_run, skipped=r.chips_skipped,
                      used=r.method, estimate_mb=estimate,
                      rss_mb=rss)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def workers_speedup(tiles: int, size: int, one_tile: int, method: str, checkpoint: str | None) -> None:
    """Print wall times of filling ``tiles`` tiles of ``size`` (one task per tile) and one tile of
    ``one_tile`` pixels (its chip rows on the workers) with 1 and 2 worker processes, and the speed-ups."""
    from utilise_cli.fill import FillOptions, fill
    from utilise_cli.tiles import fill_tiles

    options = FillOptions(method=method, checkpoint=checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tiles"
        for i in range(tiles):
            (root / f"tile{i}").mkdir(parents=True)
            build_stack(size, root / f"tile{i}")
        big = Path(tmp) / "one_tile"
        big.mkdir()
        build_stack(one_tile, big)
        cases = {}
        for scheduler in ("local:1", "local:2"):
            start = time.perf_counter()
            results = fill_tiles(root, Path(tmp) / f"tiles_{scheduler[-1]}", options, scheduler)
            cases[("tiles", scheduler)] = time.perf_counter() - start
            failed = [r for r in results if r.error]
            if failed:
                raise SystemExit(f"{scheduler}: {failed}")
        for scheduler in ("sync", "local:1", "local:2"):
            start = time.perf_counter()
            fill(big, Path(tmp) / f"one_{scheduler[-1]}", options, scheduler=scheduler)
            cases[("one tile", scheduler)] = time.perf_counter() - start
    print(f"stacks of 10 dates, method {method}; cluster start-up included")
    print(f"{'job':38s} {'scheduler':10s} {'seconds':>8s} {'speed-up vs local:1':>20s}")
    for (job, scheduler), seconds in cases.items():
        label = (f"{tiles} tiles of {size}^2, a task per tile" if job == "tiles"
                 else f"1 tile of {one_tile}^2, chip rows on workers")
        print(f"{label:38s} {scheduler:10s} {seconds:8.1f} {cases[(job, 'local:1')] / seconds:19.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="stack side(s) in pixels (default 2048 4096; with --workers 256)")
    parser.add_argument("--method", default="utilise", help="method, or several separated by commas (e.g. "
                        "auto,adjusted,utilise: auto's time is then also given as a ratio to each other)")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--panel-widths", default=None, help="column panel widths to compare, separated by commas "
                        "(0: the whole width; default: fill's default only)")
    parser.add_argument("--network-workers", default=None, help="fill's --network-workers to compare, separated by "
                        "commas (default: fill's default only)")
    parser.add_argument("--workers", action="store_true", help="measure 2 dask worker processes against 1")
    parser.add_argument("--tiles", type=int, default=4, help="with --workers: number of tiles")
    parser.add_argument("--one-tile", type=int, default=768, help="with --workers: side of the single tile, pixels")
    args = parser.parse_args()
    if args.workers:
        workers_speedup(args.tiles, (args.sizes or [256])[0], args.one_tile, args.method, args.checkpoint)
        return
    args.sizes = args.sizes or [2048, 4096]
    methods = args.method.split(",")
    widths = [int(w) for w in args.panel_widths.split(",")] if args.panel_widths else [None]
    chip_workers = [int(w) for w in args.network_workers.split(",")] if args.network_workers else [None]
    print(f"{'size':>6s} {'method':>8s} {'panel':>6s} {'nw':>3s} {'filled with':>16s} {'chips run/skipped':>18s} "
          f"{'total s':>8s} {'network s':>9s} {'overhead':>8s} {'MPx-dates/s':>11s} {'peak RSS MB':>11s} "
          f"{'estimate':>9s}")
    peaks = {}
    for size in args.sizes:
        seconds = {}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "scenes"
            folder.mkdir()
            build_stack(size, folder)
            for method in methods:
                first: dict = {}
                for width, nw in [(width, nw) for nw in chip_workers for width in widths]:
                    r = run_case(folder, Path(tmp) / f"out_{method}_{width}_{nw}", method, args.checkpoint, width, nw)
                    overhead = (r["seconds"] - r["network"]) / r["network"] if r["network"] > 0 else float("nan")
                    first = first or r
                    peaks.setdefault((method, width, nw), {})[size] = r["rss_mb"]
                    if width == widths[0] and nw == chip_workers[0]:
                        seconds[method] = r["seconds"]
                    print(f"{size:6d} {method:>8s} {'-' if width is None else width:>6} "
                          f"{'-' if nw is None else nw:>3} {r['used']:>16s} {r['run']:>9d}/{r['skipped']:<8d} "
                          f"{r['seconds']:8.1f} {r['network']:9.1f} "
                          f"{overhead:8.0%} {size * size * 10 / 1e6 / r['seconds']:11.2f} {r['rss_mb']:11.0f} "
                          f"{r['estimate_mb']:5.0f} ({r['estimate_mb'] / r['rss_mb'] - 1:+.0%})")
                    if r is not first:
                        case = [f"panel {width} / {widths[0]}"] if len(widths) > 1 else []
                        case += [f"network workers {nw} / {chip_workers[0]}"] if len(chip_workers) > 1 else []
                        print(f"{size:6d} {method:>8s} {', '.join(case)}: peak {r['rss_mb'] / first['rss_mb']:.2f}x, "
                              f"time {r['seconds'] / first['seconds']:.2f}x")
        if "auto" in seconds:
            for method, value in seconds.items():
                if method != "auto":
                    print(f"{size:6d} auto / {method}: {seconds['auto'] / value:.2f}x")
    for (method, width, nw), by_size in peaks.items():
        if len(by_size) > 1:
            sizes = sorted(by_size)
            panel = ("" if width is None else f", panel width {width}") + ("" if nw is None else f", {nw} workers")
            print(f"{method}{panel}: peak memory {sizes[-1]}^2 vs {sizes[0]}^2: "
                  f"{by_size[sizes[-1]] / by_size[sizes[0]]:.2f}x")


if __name__ == "__main__":
    main()
