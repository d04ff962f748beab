"""Real cloud-mask shapes for gap simulation, and fitting a shape onto a frame of another size.

A library is a list of boolean H x W masks (True = cloud or shadow) of any sizes. Sources: a dataset file
(the masks of its screened-out dates), eo-learn ``CLM.npy`` folders, WorldCereal 20 m files (SCL), or a
``.npy`` array N x H x W.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DatasetError
from .screening import MIN_LIBRARY_COVER
from ..sentinel2 import SCL_NODATA, SCL_OCCLUDED
from .sources import open_netcdf


def _usable(masks: np.ndarray, valid: np.ndarray | None = None) -> list[np.ndarray]:
    """Masks with at least 10 % cover (and fully valid, when validity is known)."""
    keep = masks.reshape(len(masks), -1).mean(axis=1) >= MIN_LIBRARY_COVER
    if valid is not None:
        keep &= valid.reshape(len(valid), -1).all(axis=1)
    return [m for m, k in zip(masks, keep) if k]


def load_mask_library(path: str | Path) -> list[np.ndarray]:
    """Boolean cloud masks (>= 10 % cover) from a dataset file, an eo-learn folder, a WorldCereal 20 m
    netCDF (SCL classes 3, 8, 9, 10) or a .npy array."""
    path = Path(path)
    if path.is_dir() and (path / "CLM.npy").is_file():
        clm = np.load(path / "CLM.npy")[..., 0] > 0
        valid = np.load(path / "IS_DATA.npy")[..., 0] > 0 if (path / "IS_DATA.npy").is_file() else None
        return _usable(clm, valid)
    if path.is_dir():
        found = sorted(path.glob("*_20m_*.nc"))
        if not found:
            raise DatasetError(f"{path}: no mask library here (expected CLM.npy or a WorldCereal *_20m_*.nc)")
        return [m for p in found for m in load_mask_library(p)]
    if path.suffix == ".npy":
        return _usable(np.load(path) > 0)
    if path.suffix == ".nc":
        ds = open_netcdf(path, decode=False)
        if "SCL" not in ds.variables:
            raise DatasetError(f"{path}: no SCL variable to take cloud masks from")
        scl = ds["SCL"].values
        return _usable(np.isin(scl, SCL_OCCLUDED), ~np.isin(scl, SCL_NODATA))
    if path.suffix in (".h5", ".hdf5"):
        from .store import DatasetFile

        with DatasetFile(path) as data:
            return [m for item in data for m in (item.series.library if item.series.library is not None else [])]
    raise DatasetError(f"{path}: unknown mask library; pass an eo-learn folder (CLM.npy), a WorldCereal "
                       "20 m .nc, a .npy array or a dataset .h5")


def load_mask_libraries(paths: Sequence[str | Path]) -> list[np.ndarray]:
    return [m for p in paths for m in load_mask_library(p)]


def fit_mask(mask: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random height x width window of ``mask``; a mask smaller than that is first enlarged by the
    smallest integer factor (nearest neighbour) so the shapes keep their look."""
    factor = max(1, -(-height // mask.shape[0]), -(-width // mask.shape[1]))
    if factor > 1:
        mask = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
    y = int(rng.integers(0, mask.shape[0] - height + 1))
    x = int(rng.integers(0, mask.shape[1] - width + 1))
    return mask[y:y + height, x:x + width]


def draw_mask(pools: Sequence[Sequence[np.ndarray]], height: int, width: int, rng: np.random.Generator,
              tries: int = 20) -> np.ndarray:
    """A real cloud mask fitted to height x width with at least 10 % cover, from the first non-empty pool.
    The window with the largest cover is used when none of ``tries`` reaches 10 %."""
    pool = next((p for p in pools if len(p)), None)
    if pool is None:
        raise DatasetError("no cloud masks to simulate gaps with; pass --masks (e.g. an eo-learn CLM.npy folder)")
    best = None
    for _ in range(tries):
        candidate = fit_mask(pool[int(rng.integers(len(pool)))], height, width, rng)
        if candidate.mean() >= MIN_LIBRARY_COVER:
            return candidate
        if best is None or candidate.mean() > best.mean():
            best = candidate
    assert best is not None
    return best
