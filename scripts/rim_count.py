"""Cloud remnants left around the masks, the measure of issue #16.

A rim pixel: within 3 px of a date's input cloud mask (the mask as given, before any buffer), and brighter in B2
in the output than that pixel's median over all output dates by more than 0.03 reflectance.

    python scripts/rim_count.py OUT_FOLDER SCENE_FOLDER      # a fill's outputs against its input masks
    python scripts/rim_count.py --study                       # buffers and the screen on training-policy data

The study fills the training-policy series of scripts/screen_agreement.py (WorldCereal, the Portugal and HU/RO
minicubes; SCL as the given mask) with the adjusted interpolation, with the masks as given, grown by 1 and 2 px,
with the screen alone and with fill's defaults, and prints the rim count and the share of pixel-dates filled.
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


def study() -> None:
    """Rims and filled share on the training-policy sources of screen_agreement.py, SCL (3, 8, 9, 10) as the
    given mask: as given, grown by 1 and 2 px, the screen alone, and the defaults (1 px and the screen)."""
    from screen_agreement import OCCLUDED, TRAINING, sources, usable

    from utilise_cli.baselines import interpolate
    from utilise_cli.screen import screen

    data = sources()
    print("| source | masks | rim pixels | pixel-dates filled |")
    print("|---|---|---|---|")
    for name in TRAINING:
        refl, scl, days = data[name]
        refl, valid = usable(refl, scl)
        given = np.isin(scl, OCCLUDED) & valid
        for label, px, screened in (("as given", 0, False), ("grown by 1 px", 1, False), ("grown by 2 px", 2, False),
                                    ("the screen", 0, True), ("1 px and the screen (defaults)", 1, True)):
            occluded = grow(given, px)
            if screened:
                occluded = occluded | screen(refl, occluded, ["B2", "B3", "B4", "B8"])
            observed = valid & ~occluded
            filled = interpolate("adjusted", np.nan_to_num(refl), observed, days)
            blue = np.where(valid, filled[:, 0], np.nan)
            print(f"| {name} | {label} | {rims(blue, given)} | {(occluded & valid).sum() / valid.sum():.1%} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--study", action="store_true", help="buffers and the screen on the training sources")
    args = parser.parse_args()
    if args.study:
        study()
    elif len(args.paths) == 2:
        from_folders(*args.paths)
    else:
        parser.error("give OUT_FOLDER SCENE_FOLDER, or --study FOLDER")
    return 0


if __name__ == "__main__":
    sys.exit(main())
