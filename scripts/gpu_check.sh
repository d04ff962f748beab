#!/usr/bin/env bash
# The GPU check (issue #17): on a CUDA machine, fill a 2048^2 x 10-date mosaic of the sample with the shipped
# network on the GPU in fp32 and with --precision auto, and on the CPU in fp32; print chips/s, the network's own
# time and the rest (overhead), and how far the GPU outputs are from the CPU's (max |difference| in DN, PSNR).
# Under 8 minutes on one H100. Run from the repository root: bash scripts/gpu_check.sh [SIZE]. UTILISE_SHARED
# may point at a copy of ../shared/reference's parent where ../shared is not beside the clone.
set -euo pipefail
SIZE=${1:-2048}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
# The suite's CUDA tests, and the bf16 tests of the network beside them.
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_network.py -k "cuda or gpu or bf16" || echo "CUDA TESTS FAILED"
python3 - "$SIZE" "$WORK" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_fill import build_stack
folder = Path(sys.argv[2]) / "scenes"
folder.mkdir()
build_stack(int(sys.argv[1]), folder)
PY
python3 - "$WORK" <<'PY'
import sys
import time
from pathlib import Path
from utilise_cli.fill import FillOptions, fill
work = Path(sys.argv[1])
for device, precision in (("cuda", "fp32"), ("cuda", "auto"), ("cpu", "fp32")):
    start = time.perf_counter()
    r = fill(work / "scenes", work / f"{device}_{precision}", FillOptions(method="utilise", device=device,
                                                                        precision=precision))
    seconds = time.perf_counter() - start
    print(f"{device} {precision:5s} {seconds:7.1f} s  {r.chips_run / seconds:7.2f} chips/s  network {r.network_seconds:6.1f} s"
          f"  overhead {(r.seconds - r.network_seconds) / r.network_seconds:5.0%}", flush=True)
PY
python3 - "$WORK" <<'PY'
import sys
from pathlib import Path
import numpy as np
import rasterio
work = Path(sys.argv[1])
for run in ("cuda_fp32", "cuda_auto"):
    worst, squared, count = 0, 0.0, 0
    for cpu in sorted((work / "cpu_fp32").glob("*_filled.tif")):
        with rasterio.open(cpu) as a, rasterio.open(work / run / cpu.name) as b:
            x, y = a.read().astype(np.int64), b.read().astype(np.int64)
        worst = max(worst, int(np.abs(x - y).max()))
        squared += float((((x - y) * 1e-4) ** 2).sum())
        count += x.size
    psnr = float("inf") if squared == 0 else -10 * np.log10(squared / count)
    print(f"{run} vs cpu_fp32: max |difference| {worst} DN, PSNR {psnr:.1f} dB")
PY
