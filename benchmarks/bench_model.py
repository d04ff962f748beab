"""Forward-pass time of the 4-level, 4-band U-TILISE on one 1 x 10 x 4 x 128 x 128 chip (float32, CPU).

Prints the median over several runs after warm-up, seconds per chip and GFLOP/s (92.7 GFLOP per chip),
side by side with a baseline that computes the same work the original implementation does (its dummy
full-size forward doubles the convolutions, emulated here as two passes), as a ratio. "default heap" is the
same network before the allocator tuning that ``load_model`` applies on CPU.

    python benchmarks/bench_model.py [--runs 7] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from utilise_cli.network import UTILISE, NetworkConfig
from utilise_cli.inference import cpu_has_bf16, resolve_precision
from utilise_cli.network import reuse_freed_memory

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
    auto = resolve_precision("auto", torch.device("cpu"))

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


if __name__ == "__main__":
    main()
