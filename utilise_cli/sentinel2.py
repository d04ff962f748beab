"""Sentinel-2 facts the whole package shares: band names, scene-classification (SCL) classes, DN scale.

Nothing here reads files; every module that needs one of these facts imports it from here.
"""

from __future__ import annotations

import re

DEFAULT_BANDS = ("B2", "B3", "B4", "B8")  # blue, green, red, NIR at 10 m: what the shipped network fills
S2_13_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")

# STAC common names of the bands (eo extension), which Earth Search also uses as asset names.
COMMON_NAMES = {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "rededge1", "B6": "rededge2",
                "B7": "rededge3", "B8": "nir", "B8A": "nir08", "B9": "nir09", "B11": "swir16", "B12": "swir22"}

# Scene classification (L2A SCL): 3 cloud shadow, 8 / 9 cloud medium / high probability, 10 thin cirrus.
SCL_OCCLUDED = (3, 8, 9, 10)
SCL_NODATA = (0, 1)  # no data, saturated or defective

# HLS (Harmonized Landsat Sentinel-2, v2) Fmask, bit-packed: bits 0-3 cirrus, cloud, adjacent to cloud or shadow,
# cloud shadow (occluded); 4 snow/ice, 5 water, 6-7 aerosol level (not occluded: nearly every pixel has one set);
# 255 fill.
FMASK_OCCLUDED_BITS = 0b1111
FMASK_FILL = 255

# L1C / L2A digital numbers: reflectance = DN * DN_SCALE (+ -0.1 offset for raw DN of processing baseline
# 04.00 and later; harmonised products have it removed already).
DN_SCALE = 1e-4
DN_PER_REFLECTANCE = 10000
RAW_OFFSET = -0.1  # reflectance: raw DN of baseline 04.00 and later (SAFE products, not harmonised)


def baseline_number(text: object) -> float:
    """Processing baseline as a number: '04.00', '4.0', '0400' and 'N0400' are all 4.0; 0 when unreadable."""
    value = str(text).strip().upper().lstrip("N").replace("_", ".")
    try:
        return int(value) / 100 if value.isdigit() and len(value) == 4 else float(value)
    except ValueError:
        return 0.0


_BY_COMMON_NAME = {common: band for band, common in COMMON_NAMES.items()}


def band_key(name: str) -> str:
    """Canonical band name: 'B02', 'b2', 'S2-L2A-B02' and 's2_B02' are all 'B2'; 'B8A' stays 'B8A'; the STAC
    common names of the bands ('blue', 'Red', 'nir', 'nir08', 'swir16', ...), as some exports describe them, too."""
    text = name.strip()
    match = re.search(r"(?i)B(\d{1,2})(A?)$", text)
    if match:
        return f"B{int(match.group(1))}{match.group(2).upper()}"
    return _BY_COMMON_NAME.get(text.lower(), text.upper())
