"""Build sample_data/ from the real Sweden series in ../shared (12 dates, tile T34VCL, 20 m).

For each date it writes a 4-band uint16 GeoTIFF (B2, B3, B4, B8, DN = reflectance x 10000, nodata 0) and a
binary cloud mask (1 = cloud, cloud shadow or cirrus from the scene's SCL band; 0 = clear), both on the
scene's own grid. Anyone with ../shared can rebuild the sample byte for byte:

    python scripts/make_sample_data.py [--source ../shared/data/greenearthnet/geotiff_sweden_T34VCL]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio

from utilise_cli.sentinel2 import SCL_OCCLUDED
from utilise_cli.scenes import band_key, discover_scenes

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "greenearthnet" / "geotiff_sweden_T34VCL"
BANDS = ("B2", "B3", "B4", "B8")

README = """# Sample data: 12 dates of Sentinel-2 L2A over Sweden (tile T34VCL, 59.04 N 17.96 E)

Made by `scripts/make_sample_data.py` from the GreenEarthNet GeoTIFF exports in
`../shared/data/greenearthnet/geotiff_sweden_T34VCL` (Google Earth Engine S2_SR, 20 m, EPSG:32634, 149 x 165 px).

- `YYYYMMDD_S2_T34VCL.tif`: B2, B3, B4, B8 as uint16 DN (reflectance x 10000, no offset), nodata 0.
- `YYYYMMDD_S2_T34VCL_mask.tif`: binary cloud mask, 1 = occluded (SCL classes 3, 8, 9, 10), 0 = clear.

2021-04-03, 05-01 and 05-21 carry clear clouds and shadows; 06-10 and 07-17 a little; the rest are clear.
This location is never used for training the shipped weights.

Contains modified Copernicus Sentinel data 2017-2023.
Source: GreenEarthNet, MIT License, (c) 2024 Vitus Benson (dongzhang04/greenearthnet).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for scene in discover_scenes(args.source, BANDS):
        with rasterio.open(scene.path) as src:
            names = [band_key(d or "") for d in src.descriptions]
            data = np.stack([src.read(names.index(b) + 1) for b in BANDS])
            scl = src.read(names.index("SCL") + 1)
            profile = dict(driver="GTiff", width=src.width, height=src.height, crs=src.crs, transform=src.transform,
                           tiled=True, blockxsize=256, blockysize=256, compress="deflate", predictor=2)
        stem = f"{scene.date:%Y%m%d}_S2_T34VCL"
        with rasterio.open(args.out / f"{stem}.tif", "w", count=4, dtype="uint16", nodata=0, **profile) as dst:
            dst.write(data)
            for i, b in enumerate(BANDS, start=1):
                dst.set_band_description(i, b)
            dst.update_tags(ACQUISITION_DATE=scene.date.isoformat(), SOURCE=scene.path.name)
        mask = np.isin(scl, SCL_OCCLUDED).astype(np.uint8)
        with rasterio.open(args.out / f"{stem}_mask.tif", "w", count=1, dtype="uint8", **profile) as dst:
            dst.write(mask[None])
            dst.set_band_description(1, "cloud mask (1 = occluded)")
        print(f"{stem}: {100 * mask.mean():.1f} % occluded, {100 * (data == 0).any(0).mean():.1f} % nodata")
    (args.out / "README.md").write_text(README)


if __name__ == "__main__":
    main()
