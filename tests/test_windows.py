"""Windows of the scenes read straight from their files: what the files hold, each row read once, cut at the
files' block edges."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from utilise_cli.cube import open_folder
from utilise_cli.options import FillOptions
from utilise_cli.plan import plan_fill
from utilise_cli.windows import SPLIT_BLOCK_ROWS, WindowReader

BANDS = ["B2", "B3", "B4", "B8"]


def _stack(folder: Path, dates: int = 3, height: int = 700, width: int = 300, tiled: bool = True) -> None:
    """Scenes of random DN tiled in 128-px blocks (or in strips), and binary masks in 256-px blocks (another block
    height)."""
    rng = np.random.default_rng(7)
    profile = dict(driver="GTiff", height=height, width=width, crs="EPSG:32634", tiled=True, compress="deflate",
                   transform=from_origin(500000, 6000000, 20, 20))
    blocks = dict(blockxsize=128, blockysize=128) if tiled else dict(tiled=False)
    for d in range(dates):
        name = f"2021040{d + 1}_S2_T34VCL"
        with rasterio.open(folder / f"{name}.tif", "w", count=4, dtype="uint16", nodata=0,
                           **{**profile, **blocks}) as dst:
            dst.write(rng.integers(1, 10000, (4, height, width), dtype=np.uint16))
            dst.descriptions = tuple(BANDS)
        with rasterio.open(folder / f"{name}_mask.tif", "w", count=1, dtype="uint8", blockxsize=256,
                           blockysize=256, **profile) as dst:
            dst.write(rng.integers(0, 2, (1, height, width), dtype=np.uint8))


def _file(path: Path, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(window=Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0]))


def test_windows_moving_down_read_what_the_files_hold_each_row_once_cut_at_block_edges(tmp_path, monkeypatch):
    """The fill's pattern (chip rows 96 px apart, bands and masks with margins of their own, then the next
    column panel and a window back up): every window holds the files' values; while windows move down the same
    columns no row of a file is read twice (the rows two windows share come from the last one), and no read
    reaches across an edge of blocks at least SPLIT_BLOCK_ROWS high."""
    _stack(tmp_path)
    cube = open_folder(tmp_path, BANDS)
    reader = cube.windows
    assert isinstance(reader, WindowReader)
    requests: dict[Path, list[tuple[int, int, int]]] = defaultdict(list)  # file -> (window, first row, stop)
    read, now = WindowReader._read, [0]

    def recorded(self, share, path, indexes, window, out):
        requests[Path(path)].append((now[0], window.row_off, window.row_off + window.height))
        read(self, share, path, indexes, window, out)

    monkeypatch.setattr(WindowReader, "_read", recorded)
    height = cube.grid.height
    down = [((max(0, y - 21), min(height, y + 117)), (max(0, y - 25), min(height, y + 121)))
            for y in range(0, height, 96)]
    windows = [(rows, (0, 170), masks, (0, 174)) for rows, masks in down]
    windows += [(rows, (150, 300), masks, (146, 300)) for rows, masks in down[:3]] + [windows[2]]
    for now[0], (rows, cols, mask_rows, mask_cols) in enumerate(windows):
        bands, masks = reader.read(rows, cols, mask_rows, mask_cols)
        for t, scene in enumerate(cube.scenes):
            assert np.array_equal(bands[t], _file(scene.bands["B2"].path, rows, cols))
            assert np.array_equal(masks[t], _file(scene.mask.path, mask_rows, mask_cols)[0])

    assert len(requests) == 2 * len(cube.scenes)
    for path, spans in requests.items():
        block = 256 if path.stem.endswith("_mask") else 128
        assert block >= SPLIT_BLOCK_ROWS
        assert all(a // block == (b - 1) // block for _, a, b in spans), f"{path.name}: a read across a block edge"
        rows_read = [r for window, a, b in spans if window < len(down) for r in range(a, b)]
        assert len(rows_read) == len(set(rows_read)), f"{path.name}: rows read twice while moving down"
        assert set(rows_read) == set(range(height)), f"{path.name}: rows missing"


def test_scenes_in_strips_read_in_several_column_panels_are_named_with_the_fix(tmp_path, caplog):
    """A scene stored in strips is decompressed whole once per column panel: the plan says so, naming the file and
    the fix; tiled scenes, or strips read in one panel, say nothing."""
    import logging

    for tiled in (True, False):
        folder = tmp_path / ("tiled" if tiled else "strips")
        folder.mkdir()
        _stack(folder, tiled=tiled)
        for panel_width in (128, 0):
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="utilise_cli"):
                plan = plan_fill(folder, tmp_path / "out", FillOptions(method="linear", chip_size=64,
                                                                       panel_width=panel_width))
            said = [r.getMessage() for r in caplog.records if "stored in strips" in r.getMessage()]
            if tiled or len(plan.panels) == 1:
                assert not said, said
            else:
                assert len(plan.panels) > 1 and len(said) == 1
                assert str(folder / "20210401_S2_T34VCL.tif") in said[0] and "TILED=YES" in said[0]
