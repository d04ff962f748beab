#!/usr/bin/env bash
# The bf16 CPU check (issue #17): on a CPU that multiplies bf16 natively (AMX or AVX-512 BF16), run on two of its
# cores (the project's machines have two) with every GPU hidden, print what #17 must show there: the network's
# forward pass in fp32 and auto beside the original implementation's work, the default fill's time, the
# network's own time, the overhead (bound: 10 %) and peak memory at each size, where the time besides the
# network goes, and whether reading and writing beside the network's passes would find idle CPU.
# Forced on two cores without native bf16 (AMD EPYC, AVX2; the network in fp32) with SIZES=1024 it took 7 minutes;
# on two cores of an AMD EPYC with AVX-512 BF16 (the network in bf16) the default sizes took 5 min 31 s
# (2026-12-05), and SIZES="1024 2048 4096" adds the 4096^2 row (its two fills took 224 s
# more there, besides building the stack). Run from the repository root:
#   bash scripts/bf16_check.sh            # refuses a CPU without native bf16 (auto would run fp32 there)
#   FORCE=1 CORES=0,1 SIZES="1024 2048" bash scripts/bf16_check.sh
set -euo pipefail
CORES=${CORES:-0,1}
SIZES=${SIZES:-1024 2048}
export CUDA_VISIBLE_DEVICES=""
grep -m1 "model name" /proc/cpuinfo || true
if ! python3 -c "import sys; from utilise_cli.hardware import cpu_has_bf16; sys.exit(not cpu_has_bf16())"; then
    echo "this CPU has neither AMX nor AVX-512 BF16: --precision auto runs fp32 here"
    [ "${FORCE:-0}" = 1 ] || exit 2
fi
pin=()
if command -v taskset >/dev/null; then pin=(taskset -c "$CORES"); else echo "no taskset: running on every core"; fi
run() { echo "\$ ${pin[*]} $*"; "${pin[@]}" "$@"; }
threads=$("${pin[@]}" python3 -c "from utilise_cli.cores import usable_cores; print(usable_cores())")
run python3 benchmarks/bench_model.py --threads "$threads"
# shellcheck disable=SC2086  # SIZES is a list
run python3 benchmarks/bench_fill.py --sizes $SIZES --method utilise,auto
run python3 benchmarks/bench_phases.py --size 2048 --method utilise
run python3 benchmarks/bench_overlap.py --threads "$threads"
