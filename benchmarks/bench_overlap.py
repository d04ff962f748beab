"""Is there room beside the network's passes? Whether work done on another thread while the network runs (the next
chip row's reading, the last one's writing) would come for free on this CPU, or slow the network down.

Runs the shipped network on batches of 4 chips of 10 dates (the fill's batch) for --passes passes, alone and beside
one more thread that compresses 2048 x 512-px blocks of 4 bands through GDAL (DEFLATE, as the fill's writes and COG
copies do) at three priorities: the idle class (SCHED_IDLE: it runs only on a core nothing else wants), the lowest
nice level (19) and normal priority. Each case runs twice, in fresh processes: with OpenMP's default waiting
(torch's threads spin between operations, so the network's cores look busy even while its threads wait for each
other) and with OMP_WAIT_POLICY=PASSIVE (they sleep instead, and hand those moments to the other thread). Cases
alternate for --rounds rounds; medians are printed.

The figure that decides is the network's added time per core-second of compression done meanwhile: the same work
done after the passes, on every core, costs 1 / cores seconds of wall time per core-second. Overlapping pays only
where a case's figure is below that.

    python benchmarks/bench_overlap.py [--passes 8] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from typing import Callable

import numpy as np

BLOCK = (4, 512, 2048)  # bands x rows x columns compressed per write
PRIORITIES = {"idle class": "idle", "nice 19": 19, "normal priority": 0}
WAITS = {"default": None, "passive": "PASSIVE"}  # OMP_WAIT_POLICY


def lower_priority(priority: str | int) -> None:
    """Put the calling thread in the idle scheduling class ("idle") or at a nice level (Linux: per thread)."""
    tid = threading.get_native_id()
    if priority == "idle":
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    elif priority:
        os.setpriority(os.PRIO_PROCESS, tid, int(priority))


def compress_forever(data: np.ndarray, stop: threading.Event, done: list[int], priority: str | int) -> None:
    """Write ``data`` to an in-memory DEFLATE GeoTIFF again and again until ``stop``; counts writes in done[0]."""
    import rasterio
    from rasterio.io import MemoryFile

    lower_priority(priority)
    bands, rows, cols = data.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        while not stop.is_set():
            with MemoryFile() as memory, memory.open(driver="GTiff", width=cols, height=rows, count=bands,
                                                     dtype="uint16", tiled=True, blockxsize=512, blockysize=512,
                                                     compress="deflate", zlevel=1, predictor=2) as dst:
                dst.write(data)
            done[0] += 1


def with_background(work: Callable[[], None], data: np.ndarray, priority: str | int | None) -> tuple[float, int]:
    """(seconds ``work()`` took, writes a thread compressing ``data`` at ``priority`` made meanwhile; no thread
    where ``priority`` is None)."""
    stop, done = threading.Event(), [0]
    thread = None if priority is None else threading.Thread(target=compress_forever,
                                                             args=(data, stop, done, priority))
    if thread is not None:
        thread.start()
    start = time.perf_counter()
    work()
    took = time.perf_counter() - start
    stop.set()
    if thread is not None:
        thread.join()
    return took, done[0]


def measure(passes: int, rounds: int, threads: int | None) -> dict:
    """This process's figures: the compressing thread's writes per second alone, and per case (alone and each
    priority) the seconds of the passes and the writes made meanwhile, one pair per round."""
    from utilise_cli.fill import FillOptions
    from utilise_cli.plan import load_predictor

    if threads:
        import torch

        torch.set_num_threads(threads)
    predictor = load_predictor(FillOptions(method="utilise"))[0]
    rng = np.random.default_rng(0)
    x = rng.random((4, 10, 4, 128, 128), np.float32) * np.float32(0.3)
    observed = rng.random((4, 10, 128, 128)) < 0.7
    days = np.arange(10, dtype=np.float32) * 20 + 10
    data = (rng.random(BLOCK) * 3000).astype(np.uint16)
    predictor(x, observed, days)  # warm-up

    def run_passes() -> None:
        for _ in range(passes):
            predictor(x, observed, days)

    took, writes = with_background(lambda: time.sleep(3.0), data, 0)
    cases: dict[str, list[tuple[float, int]]] = {"alone": []}
    for _ in range(rounds):
        cases["alone"].append(with_background(run_passes, data, None))
        for label, priority in PRIORITIES.items():
            cases.setdefault(label, []).append(with_background(run_passes, data, priority))
    return {"rate": writes / took, "precision": str(predictor.precision), "cases": cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=8, help="network passes per case (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every case, alternating (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.passes, args.rounds, args.threads)))
        return
    from utilise_cli.cores import usable_cores

    cores = args.threads or usable_cores()
    command = [sys.executable, __file__, "--child", "--passes", str(args.passes), "--rounds", str(args.rounds)]
    command += ["--threads", str(args.threads)] if args.threads else []
    print(f"{args.passes} passes of 4 chips per case, {args.rounds} rounds, medians; on {cores} cores the same "
          f"work after the passes costs {1 / cores:.2f} s per core-second")
    print(f"{'OpenMP waits':13s} {'case':16s} {'network s':>10s} {'vs alone':>9s} {'thread got':>11s} "
          f"{'added s per core-s':>19s}")
    for wait, policy in WAITS.items():
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        env.update({"OMP_WAIT_POLICY": policy} if policy else {})
        result = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True)
                            .stdout.splitlines()[-1])
        alone = statistics.median(t for t, _ in result["cases"]["alone"])
        for label, runs in result["cases"].items():
            took = statistics.median(t for t, _ in runs)
            work = statistics.median(n / result["rate"] for _, n in runs)  # core-seconds of compression done
            # Below a tenth of a core the quotient is the passes' own noise over next to nothing.
            added = f"{(took - alone) / work:19.2f}" if work > 0.1 * took else f"{'(too little work)':>19s}"
            print(f"{wait:13s} {label:16s} {took:10.2f} {took / alone:8.2f}x {work / took:8.2f} core "
                  f"{'' if label == 'alone' else added}")
    print(f"precision {result['precision']}; overlapping pays where 'added s per core-s' < {1 / cores:.2f}")


if __name__ == "__main__":
    main()
