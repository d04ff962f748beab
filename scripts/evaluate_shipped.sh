#!/usr/bin/env bash
# The evaluation tables of the model card: the default (`auto`), the shipped weights and the baselines on the
# Sweden GeoTIFFs and the Sweden minicube (a location never seen in training) and the EarthNet2021 cubes (tile
# 29SND, seen in training via the Portugal minicube), each simulated with 5 seeds. Run from the repository
# root with ../shared beside it. `auto` chooses per series by self-validation on the series' own input.
set -euo pipefail
D=../shared/data
MODELS=${1:-auto,shipped}
mkdir -p build/data build/eval
# The evaluation set keeps its masks as given, so that its target pixels do not change with fill's defaults.
utilise prepare geotiff "$D/greenearthnet/geotiff_sweden_T34VCL" --out build/data/sweden.h5 -q --no-screen \
  --mask-buffer 0
utilise prepare earthnet2021 "$D/earthnet2021/iid_29SND" --out build/data/earthnet2021.h5 -q
utilise prepare minicube "$D/greenearthnet/minicubes/MJJ2021_replicated_minicube_241_34VCL_59.04_17.96.nc" \
  --out build/data/sweden_minicube.h5 -q
for name in sweden earthnet2021 sweden_minicube; do
  utilise eval "linear,adjusted,closest,$MODELS" "build/data/$name.h5" --seeds 0,1,2,3,4 \
    --masks "$D/eolearn_cloudmasks" --out "build/eval/$name" -q
  cat "build/eval/$name/summary.md"
done
