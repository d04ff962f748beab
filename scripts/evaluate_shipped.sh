#!/usr/bin/env bash
# The evaluation tables of the model card: the shipped weights against the baselines on the Sweden series
# (a location never seen in training) and the EarthNet2021 cubes (tile 29SND, seen in training via the
# Portugal minicube), each simulated with 5 seeds. Run from the repository root with ../shared beside it.
set -euo pipefail
D=../shared/data
MODEL=${1:-shipped}
mkdir -p build/data build/eval
utilise prepare geotiff "$D/greenearthnet/geotiff_sweden_T34VCL" --out build/data/sweden.h5 -q
utilise prepare earthnet2021 "$D/earthnet2021/iid_29SND" --out build/data/earthnet2021.h5 -q
for name in sweden earthnet2021; do
  utilise eval "linear,adjusted,closest,$MODEL" "build/data/$name.h5" --seeds 0,1,2,3,4 \
    --masks "$D/eolearn_cloudmasks" --out "build/eval/$name" -q
  cat "build/eval/$name/summary.md"
done
