"""Does the cloud screen cost quality where the given masks are right? The last measure of issue #16.

Each dataset's series keep their masks as given (as `utilise eval` scores them) and get simulated gaps (real
cloud masks from eo-learn's library, one file per seed). Then, on the same gaps and the same scored pixels
(inside the gaps, with a valid target, and not flagged by the screen on the target frame), the gaps are filled
by linear and adjusted interpolation twice: from the input as it is, and from the input without the screen's
pixels. The difference says what removing them does to the rest (mean ± standard deviation over the seeds, and
on how many seeds it is lower by more than 0.005 dB). The share is the screen's pixels among the valid
pixel-dates.

    python scripts/screen_quality.py [--seeds 0,1,2]   # training-policy and evaluation sets (../shared beside)

The training-policy sets (WorldCereal Belgium, the Portugal and HU/RO GeoTIFFs and minicubes) are where the
screen may be tuned; the Sweden sets and EarthNet2021 are scored only. Prepared and simulated files go to
build/screen_quality/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from utilise_cli.baselines import interpolate
from utilise_cli.datasets import ScreeningRule, prepare, simulate
from utilise_cli.datasets.series import OCCLUDED
from utilise_cli.datasets.store import DatasetFile
from utilise_cli.metrics import psnr_from_rmse, rmse
from utilise_cli.options import ReadOptions
from utilise_cli.screen import screen
from utilise_cli.sentinel2 import band_key

from screen_agreement import DATA, ROOT  # scripts/ is on the path when a script runs

WORK = ROOT / "build" / "screen_quality"
MINICUBES = DATA / "greenearthnet" / "minicubes"
AS_GIVEN = ReadOptions(screen=False, mask_buffer=0)  # the evaluation's masks: as the source gives them
SETS = {  # name: (format, sources, reader options), training-policy first
    "WorldCereal Belgium (training)": ("worldcereal", [DATA / "worldcereal" / "00002806639B424A"], {}),
    "GeoTIFF Portugal (training)": ("geotiff", [DATA / "greenearthnet" / "geotiff_portugal"],
                                    {"read": ReadOptions(screen=False, mask_buffer=0, align=True)}),
    "GeoTIFF HU/RO (training)": ("geotiff", [DATA / "greenearthnet" / "geotiff_hu_ro"], {"read": AS_GIVEN}),
    "minicubes Portugal, HU/RO (training)": ("minicube", sorted(MINICUBES.glob("*_29SND_*.nc"))
                                             + sorted(MINICUBES.glob("*_34TET_*.nc")), {}),
    "GeoTIFF Sweden (evaluation)": ("geotiff", [DATA / "greenearthnet" / "geotiff_sweden_T34VCL"],
                                    {"read": AS_GIVEN}),
    "minicube Sweden (evaluation)": ("minicube", sorted(MINICUBES.glob("*_34VCL_*.nc")), {}),
    "EarthNet2021 iid 29SND (evaluation)": ("earthnet2021", [DATA / "earthnet2021" / "iid_29SND"], {}),
}
METHODS = ("linear", "adjusted")


def scores(simulated: Path) -> tuple[dict[str, tuple[float, float]], float]:
    """Mean PSNR (dB) over the series of ``simulated``, per method: (input as it is, screen's pixels removed);
    and the screen's share of the valid pixel-dates."""
    psnr: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in METHODS}
    flagged = valid_count = 0
    with DatasetFile(simulated) as data:
        key = data.ratios[0]
        for item in data:
            series, gaps = item.series, item.gaps[key].mask
            target = series.frames
            valid = ~np.isnan(target).any(axis=1)
            bands = [band_key(b).replace("B8A", "B8") for b in series.bands]  # B8A stands in for B8
            found = screen(np.where(valid[:, None], target, np.nan).astype(np.float32),
                           series.cloud_mask == OCCLUDED, bands) & valid
            flagged, valid_count = flagged + found.sum(), valid_count + valid.sum()
            scored = valid & gaps & ~found
            if not scored.any():
                continue
            clean = np.nan_to_num(target)
            for method in METHODS:
                for kept, extra in zip(psnr[method], (np.zeros_like(found), found)):
                    filled = np.nan_to_num(interpolate(method, clean, valid & ~gaps & ~extra, series.days))
                    kept.append(psnr_from_rmse(rmse(filled, clean, scored)))
    return {m: (float(np.mean(a)), float(np.mean(b))) for m, (a, b) in psnr.items()}, flagged / max(valid_count, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="simulation seeds, comma-separated (default 0,1,2)")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"{DATA} is missing: put the shared data beside the repository", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    print("| set | screen's share | " + " | ".join(f"{m}: as given -> screen removed" for m in METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for n, (name, (fmt, sources, options)) in enumerate(SETS.items()):
        prepared = WORK / f"set{n}.h5"
        if not prepared.exists():
            prepare(fmt, sources, prepared, ScreeningRule(), **options)
        per_seed = []
        for seed in seeds:
            simulated = WORK / f"set{n}_seed{seed}.h5"
            if not simulated.exists():
                simulate(prepared, simulated, seed, (0.5,), [DATA / "eolearn_cloudmasks"])
            per_seed.append(scores(simulated))
        share = np.mean([s for _, s in per_seed])
        cells = []
        for method in METHODS:
            plain, removed = (np.array([r[method][k] for r, _ in per_seed]) for k in (0, 1))
            change = removed - plain
            cells.append(f"{plain.mean():.2f} -> {removed.mean():.2f} dB ({change.mean():+.2f} ± {change.std():.2f}, "
                         f"lower on {(change < -0.005).sum()} of {len(seeds)} seeds)")
        print(f"| {name} | {share:.2%} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
