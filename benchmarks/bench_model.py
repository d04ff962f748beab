"""Forward-pass time of the 4-level, 4-band U-TILISE on one 1 x 10 x 4 x 128 x 128 chip (float32, CPU).

Prints the median over several runs after warm-up, seconds per chip and GFLOP/s (92.7 GFLOP per chip),
side by side with a baseline that computes the same work the original implementation does (its dummy
full-size forward doubles the convolutions, emulated here as two passes), as a ratio. "default heap" is the
same network before the allocator tuning that ``load_model`` applies on CPU.

Then the work a fill does per chip beside the forward pass, on a real chip: 128 x 128 pixels of the sample
scenes inside their nodata border (12 dates, their masks and the cloud screen) and the shipped network, whose
input is the series filled by the ``adjusted`` interpolation; and the blending of a chip's prediction into the
row buffer (its dates with something to fill, as a fill blends it). Each as a share of the forward pass at the
same precision as a fill runs it (only the dates with something to fill decoded); the pass over every date is
printed beside it.

    python benchmarks/bench_model.py [--runs 7] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pathlib import Path

import numpy as np
import torch

from utilise_cli.chips import blend_window, dates_to_fill
from utilise_cli.cube import open_folder, read_stripe
from utilise_cli.hardware import cpu_has_bf16, resolve_precision
from utilise_cli.inference import network_input_tensor, run_network
from utilise_cli.network import UTILISE, NetworkConfig, load_model, reuse_freed_memory
from utilise_cli.stripes import accumulate
from utilise_cli.weights import resolve_checkpoint

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"

GFLOP_PER_CHIP = 92.7


def median_seconds(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = UTILISE(NetworkConfig()).eval()
    x = torch.rand(1, 10, 4, 128, 128)
    days = torch.arange(10, dtype=torch.float32)[None] * 12 + 5

    def forward() -> None:
        with torch.inference_mode():
            model(x, days)

    def original_style() -> None:
        # Baseline: the original runs every block twice per forward (a dummy pass on zeros to learn shapes).
        with torch.inference_mode():
            model(torch.zeros_like(x), days)
            model(x, days)

    rows = [("utilise, default heap", median_seconds(forward, args.runs))]
    reuse_freed_memory()  # what load_model does on CPU
    rows.insert(0, ("utilise (as load_model)", median_seconds(forward, args.runs)))
    auto = resolve_precision("auto", "cpu")

    def forward_auto() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=auto == "bf16"):
            model(x, days)

    rows.insert(1, (f"utilise, precision auto={auto}", median_seconds(forward_auto, args.runs)))
    rows.append(("original-style (2 passes)", median_seconds(original_style, max(3, args.runs // 2))))
    base = rows[-1][1]
    print(f"threads={torch.get_num_threads()} torch={torch.__version__} chip=1x10x4x128x128; native bf16: "
          f"{cpu_has_bf16()}")
    print(f"{'variant':28s} {'s/chip':>8s} {'GFLOP/s':>8s} {'vs original':>12s}")
    for name, sec in rows:
        print(f"{name:28s} {sec:8.3f} {GFLOP_PER_CHIP / sec:8.1f} {base / sec:11.2f}x")
    around_the_network(args.runs, auto)


def around_the_network(runs: int, auto: str) -> None:
    """Print the per-chip costs beside the shipped network's forward pass (see the module's docstring)."""
    model = load_model(resolve_checkpoint("shipped"))
    cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"])
    reflectance, observed, _ = read_stripe(cube, 16, 144, 8, 136)  # the chip that benchmarks/bench_fill.py tiles
    days = cube.days.astype(np.float32)
    tensors = torch.from_numpy(reflectance[None]), torch.from_numpy(~observed[None]), torch.from_numpy(days)

    def prefill() -> torch.Tensor:
        with torch.inference_mode():
            return network_input_tensor(*tensors, model.config.residual)

    x = prefill()
    acc = np.zeros((len(days), 4, 128, 512), np.float32)
    wsum = np.zeros((128, 512), np.float32)
    prediction, window = np.nan_to_num(reflectance), blend_window(128, 32)
    decode = dates_to_fill(observed)  # the dates a fill decodes and blends
    costs = {"adjusted input (prefill)": median_seconds(prefill, runs),
             "blending into the row buffer": median_seconds(lambda: accumulate(acc, wsum, 0, 96, prediction,
                                                                               window, decode), runs)}
    print(f"\nshipped network, one chip of the sample ({len(days)} dates, {(~observed).mean():.0%} of pixel-dates "
          f"and {decode.sum()} dates with something to fill):")
    for precision in dict.fromkeys(("fp32", auto)):
        whole = median_seconds(lambda: run_network(model, x, days, precision), runs)
        network = median_seconds(lambda: run_network(model, x, days, precision, decode[None]), runs)
        print(f"  forward pass, {precision:4s}, every date  {whole:8.4f} s")
        print(f"  forward pass, {precision:4s}, as a fill   {network:8.4f} s  (only the dates to fill decoded)")
        for name, sec in costs.items():
            print(f"  {name:32s} {sec:8.4f} s  {sec / network:6.1%} of the {precision} forward pass")
        total = sum(costs.values())
        print(f"  {'both':32s} {total:8.4f} s  {total / network:6.1%} of the {precision} forward pass")


if __name__ == "__main__":
    main()
