"""Cloud remnants left around the masks, the measure of issue #16.

A rim pixel: within 3 px of a date's input cloud mask (the mask as given, before any buffer), and brighter in B2
in the output than that pixel's median over all output dates by more than 0.03 reflectance.

    python scripts/rim_count.py OUT_FOLDER SCENE_FOLDER      # a fill's outputs against its input masks
    python scripts/rim_count.py --study WORLDCEREAL_FOLDER    # mask buffers 0..4 on a training-policy series

The study fills the WorldCereal series (SCL masks, training policy) with the adjusted interpolation after
growing its masks by 0..4 px and prints the rim count and the share of pixel-dates filled for each buffer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio
from scipy.ndimage import maximum_filter

from utilise_cli.screen import rim_count as rims


def grow(occluded: np.ndarray, px: int) -> np.ndarray:
    return maximum_filter(occluded, size=(1, 2 * px + 1, 2 * px + 1), mode="constant") if px else occluded


def from_folders(out: Path, scenes: Path) -> None:
    from utilise_cli.cube import open_folder, read_classes
    from utilise_cli.options import ReadOptions

    cube = open_folder(scenes, ["B2", "B3", "B4", "B8"], ReadOptions(screen=False, mask_buffer=0))  # the masks as given
    occluded = read_classes(cube, 0, cube.grid.height)[1]
    blue, flags = [], []
    for scene in cube.scenes:
        with rasterio.open(out / f"{scene.date:%Y%m%d}_filled.tif") as src:
            blue.append(np.where(src.read(1) == 0, np.nan, src.read(1) * 1e-4))
        with rasterio.open(out / f"{scene.date:%Y%m%d}_filled_flags.tif") as src:
            flags.append(src.read(1))
    flags = np.stack(flags)
    filled = (flags == 1) | (flags == 2)
    print(f"rim pixels {rims(np.stack(blue), occluded)}, pixel-dates filled {filled.sum()} ({filled.mean():.1%}), "
          f"of them found by the screen {(flags == 2).sum()}")


def study(folder: Path) -> None:
    from utilise_cli.baselines import interpolate
    from utilise_cli.datasets.series import CLEAR, OCCLUDED
    from utilise_cli.datasets.sources import read_worldcereal

    series = read_worldcereal(folder)[0]
    occluded = series.cloud_mask == OCCLUDED
    valid = series.cloud_mask != 2
    print(f"{series.name}: {len(series.dates)} dates, {occluded.mean():.1%} of pixel-dates occluded by SCL")
    for px in range(5):
        observed = valid & ~grow(occluded, px) & (series.cloud_mask == CLEAR)
        filled = interpolate("adjusted", np.nan_to_num(series.frames), observed, series.days)
        blue = np.where(valid, filled[:, 0], np.nan)
        print(f"buffer {px} px: rim pixels {rims(blue, occluded):6d}, pixel-dates filled {(~observed & valid).mean():.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--study", type=Path, help="a WorldCereal location folder")
    args = parser.parse_args()
    if args.study:
        study(args.study)
    elif len(args.paths) == 2:
        from_folders(*args.paths)
    else:
        parser.error("give OUT_FOLDER SCENE_FOLDER, or --study FOLDER")
    return 0


if __name__ == "__main__":
    sys.exit(main())
