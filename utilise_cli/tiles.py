"""Many tiles: a folder of tile folders (each a folder of dated scenes), filled one tile per task.

Each tile is written by :func:`utilise_cli.fill.fill` into OUT/<tile>, in this process or on dask workers
(:func:`utilise_cli.cluster.dask_client`); a tile whose every date is done is skipped, so a rerun after a
crash or a killed worker finishes only what is missing. Outputs are identical to filling each tile on its
own: the same code runs, only elsewhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .cluster import dask_client, use_threads
from .errors import OptionError, SceneError, UtiliseError
from .options import check_scheduler
from .plan import FillOptions
from .scenes import RASTER_SUFFIXES, dated_folders, is_safe_product

log = logging.getLogger(__name__)


def _has_rasters(folder: Path) -> bool:
    """Whether ``folder`` holds scenes: raster files, or Sentinel-2 SAFE products."""
    return any((p.is_file() and p.suffix.lower() in RASTER_SUFFIXES) or is_safe_product(p) for p in folder.iterdir())


def check_tile_options(options: FillOptions) -> None:
    """Refuse options that cannot serve every tile: one --mask-folder holds one tile's masks."""
    if options.read.mask_folder is not None:
        raise OptionError(f"--mask-folder {options.read.mask_folder}: a folder of tiles takes each tile's masks from "
                          "that tile's folder (or a masks/ subfolder of it); leave --mask-folder out")


def find_tiles(folder: str | Path) -> list[Path] | None:
    """The tile folders of ``folder`` when it is a folder of tiles (no scenes of its own, subfolders with
    scenes, not all named by date); None when it is a folder of scenes (or of a folder per date)."""
    folder = Path(folder)
    if not folder.is_dir() or _has_rasters(folder) or dated_folders(folder):
        return None
    tiles = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and _has_rasters(p))
    return tiles or None


@dataclass
class TileResult:
    tile: str
    outputs: int
    skipped: int
    chips_run: int
    seconds: float
    error: str = ""


def fill_tile(tile: str, out: str, options: FillOptions, threads: int = 0) -> TileResult:
    """Fill one tile (runs in a worker). Project errors come back as text so one bad tile does not stop the rest."""
    from .fill import fill  # here: finding tiles for a --dry-run imports no torch

    use_threads(threads)
    try:
        report = fill(tile, out, options)
    except UtiliseError as err:
        return TileResult(Path(tile).name, 0, 0, 0, 0.0, str(err))
    return TileResult(Path(tile).name, len(report.outputs), len(report.skipped_outputs), report.chips_run,
                      report.seconds)


def fill_tiles(folder: str | Path, out: str | Path, options: FillOptions, scheduler: str = "sync",
               progress: Callable[[int, int], None] | None = None) -> list[TileResult]:
    """Fill every tile of ``folder`` into ``out/<tile>``. ``scheduler``: sync (this process), processes or
    local:N (a dask LocalCluster of N single-threaded worker processes), or a scheduler address."""
    check_scheduler(scheduler)
    check_tile_options(options)
    tiles = find_tiles(folder)
    if not tiles:
        raise SceneError(f"{folder}: no tile folders with scenes inside; pass a folder of tile folders")
    out = Path(out)
    jobs = [(str(t), str(out / t.name)) for t in tiles]
    results: list[TileResult] = []
    if scheduler in ("sync", "threads"):
        for i, (tile, target) in enumerate(jobs):
            results.append(fill_tile(tile, target, options))
            if progress:
                progress(i + 1, len(jobs))
    else:
        from dask.distributed import as_completed

        with dask_client(scheduler) as (client, threads):
            futures = [client.submit(fill_tile, tile, target, options, threads, pure=False) for tile, target in jobs]
            for i, future in enumerate(as_completed(futures)):
                results.append(future.result())
                if progress:
                    progress(i + 1, len(jobs))
    results.sort(key=lambda r: r.tile)
    for r in results:
        if r.error:
            log.error("tile %s failed: %s", r.tile, r.error)
        else:
            log.info("tile %s: %d dates written, %d already done, %d chips, %.1f s", r.tile, r.outputs, r.skipped,
                     r.chips_run, r.seconds)
    return results
