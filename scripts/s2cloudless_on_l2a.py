"""What s2cloudless finds on the project's L2A GeoTIFF exports, whose B10 (cirrus) is missing: the README's reason
for not building a ``--mask s2cloudless`` option.

    pip install s2cloudless   # not a dependency of utilise-cli
    python scripts/s2cloudless_on_l2a.py [FOLDER ...]   # default: the three GeoTIFF folders of ../shared

s2cloudless's model takes L1C top-of-atmosphere reflectance of B01, B02, B04, B05, B08, B8A, B09, B10, B11 and B12.
The exports have every band but B10, as surface reflectance; B10 is given as 0 here. Per date it prints the share
of valid pixels s2cloudless flags (threshold 0.4, averaging over 4 px, dilation 2 px: its documented settings for
coarse pixels) beside the share SCL calls cloud (8, 9, 10), and the recall and precision of the one against the
other, and the highest probability it gives an SCL cloud pixel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = [ROOT.parent / "shared" / "data" / "greenearthnet" / name
           for name in ("geotiff_sweden_T34VCL", "geotiff_hu_ro", "geotiff_portugal")]
MODEL_BANDS = ("B1", "B2", "B4", "B5", "B8", "B8A", "B9", "B10", "B11", "B12")
SCL_CLOUD = (8, 9, 10)


def main(folders: list[Path]) -> None:
    try:
        from s2cloudless import S2PixelCloudDetector
    except ImportError:
        sys.exit("this script needs s2cloudless: pip install s2cloudless")
    detector = S2PixelCloudDetector(threshold=0.4, average_over=4, dilation_size=2, all_bands=False)
    print(f"{'file':<40s} {'s2cloudless':>11s} {'SCL cloud':>9s} {'recall':>6s} {'precision':>9s} "
          f"{'top probability on SCL cloud':>28s}")
    for folder in folders:
        for path in sorted(folder.glob("*.tif")):
            with rasterio.open(path) as src:
                bands = {name: src.read(i + 1) for i, name in enumerate(src.descriptions) if name}
            valid = bands["B2"] > 0  # 0 is nodata in these exports
            stack = np.stack([bands[b].astype(np.float32) / 1e4 if b in bands else np.zeros(valid.shape, np.float32)
                              for b in MODEL_BANDS], axis=-1)
            probability = detector.get_cloud_probability_maps(stack[None])
            flagged = detector.get_mask_from_prob(probability)[0].astype(bool) & valid
            cloud = np.isin(bands["SCL"], SCL_CLOUD) & valid
            both = int((flagged & cloud).sum())
            recall = both / cloud.sum() if cloud.any() else float("nan")
            precision = both / flagged.sum() if flagged.any() else float("nan")
            print(f"{path.name[:40]:<40s} {flagged.sum() / valid.sum():11.3f} {cloud.sum() / valid.sum():9.3f} "
                  f"{recall:6.2f} {precision:9.2f} {probability[0][cloud].max() if cloud.any() else float('nan'):28.2f}")


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]] or FOLDERS)
