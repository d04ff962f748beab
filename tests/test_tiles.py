"""dask LocalCluster: a folder of tiles and the chip rows of one tile give the outputs of one process; a rerun
after a lost worker finishes the rest."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from utilise_cli.cli import app
from utilise_cli.fill import FillOptions, fill
from utilise_cli.tiles import fill_tiles, find_tiles

from .conftest import ROOT, one_line_error

SAMPLE = ROOT / "sample_data"
runner = CliRunner()


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """Three small real tiles: windows of the sample scenes (and their masks), each with its own transform."""
    root = tmp_path_factory.mktemp("tiles")
    for i, (row, col) in enumerate([(0, 0), (64, 40), (100, 80)]):
        folder = root / f"tile{i}"
        folder.mkdir()
        for path in sorted(SAMPLE.glob("*.tif")):
            with rasterio.open(path) as src:
                window = rasterio.windows.Window(col, row, 64, 64)
                profile = src.profile | {"width": 64, "height": 64, "transform": src.window_transform(window)}
                with rasterio.open(folder / path.name, "w", **profile) as dst:
                    dst.write(src.read(window=window))
                    dst.descriptions = src.descriptions
    return root


def test_one_mask_folder_for_a_folder_of_tiles_is_refused(tiles, tmp_path):
    """One --mask-folder cannot hold every tile's masks: one line says so (each tile failed on its own before,
    with "on another grid" or "two masks" for masks that were not its own)."""
    for args in ([], ["--dry-run"]):
        result = runner.invoke(app, ["fill", str(tiles), "--out", str(tmp_path / "out"), "--method", "linear", "-q",
                                     "--mask-folder", str(tiles / "tile0"), *args])
        one_line_error(result, "--mask-folder", "a folder of tiles")
    assert not (tmp_path / "out").exists()


def read_all(folder):
    arrays = {}
    for path in sorted(folder.rglob("*.tif")):
        with rasterio.open(path) as src:
            arrays[str(path.relative_to(folder))] = src.read()
    return arrays


def test_chip_rows_of_one_tile_on_a_local_cluster_give_the_single_process_result(tmp_path):
    # The shipped network on the real sample, 32 px chips overlapping by 8: 6 chip rows of 2 column panels, each
    # predicted on one of 2 workers, blended here across the row and panel borders; against one process and
    # one panel.
    options = FillOptions(method="utilise", chip_size=32, overlap=8)
    single = fill(SAMPLE, tmp_path / "sync", options)
    parallel = fill(SAMPLE, tmp_path / "dask", replace(options, panel_width=64), scheduler="local:2")
    assert parallel.chips_run > single.chips_run > 20  # the chips at the panel edge ran in both panels
    a, b = read_all(tmp_path / "sync"), read_all(tmp_path / "dask")
    assert len(a) == 24 and a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_local_cluster_gives_the_single_process_result(tiles, tmp_path):
    options = FillOptions(method="linear", chip_size=32, overlap=8)
    assert [t.name for t in find_tiles(tiles)] == ["tile0", "tile1", "tile2"] and find_tiles(SAMPLE) is None
    single = fill_tiles(tiles, tmp_path / "sync", options, "sync")
    parallel = fill_tiles(tiles, tmp_path / "dask", options, "local:2")
    assert [r.outputs for r in single] == [r.outputs for r in parallel] == [12, 12, 12]
    a, b = read_all(tmp_path / "sync"), read_all(tmp_path / "dask")
    assert len(a) == 3 * 24 and a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with rasterio.open(tmp_path / "dask" / "tile1" / "20210403_filled.tif") as dst, \
            rasterio.open(tiles / "tile1" / "20210403_S2_T34VCL.tif") as src:
        assert dst.transform == src.transform and dst.crs == src.crs


def test_rerun_after_a_lost_tile_finishes_only_what_is_missing(tiles, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["fill", str(tiles), "--out", str(out), "--method", "linear", "--chip-size", "32",
                                 "--overlap", "8", "--scheduler", "local:2"])
    assert result.exit_code == 0, result.output
    assert "3 of 3 tiles done, 36 COGs written" in result.output
    # what a worker killed mid-tile leaves behind: some dates missing, a hidden partial file
    for path in list((out / "tile2").glob("202106*")):
        path.unlink()
    (out / "tile2" / ".20210620_filled.partial.tif").write_bytes(b"half")
    again = runner.invoke(app, ["fill", str(tiles), "--out", str(out), "--method", "linear", "--chip-size", "32",
                                "--overlap", "8"])
    assert again.exit_code == 0, again.output
    assert "3 of 3 tiles done, 4 COGs written" in again.output
    assert len(list((out / "tile2").glob("*_filled.tif"))) == 12


def test_killing_a_worker_mid_run_leaves_no_corrupt_output(tmp_path):
    """A real SIGKILL of a dask worker process while tiles are being filled with the network: every output that
    exists is complete, and a rerun gives exactly the outputs of an undisturbed run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil
    from rio_cogeo.cogeo import cog_validate

    from utilise_cli.weights import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("no shipped weights in this installation")
    tiles = tmp_path / "tiles"
    for i in range(4):
        shutil.copytree(SAMPLE, tiles / f"tile{i}", ignore=shutil.ignore_patterns("*.md"))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "utilise_cli", "fill", str(tiles), "--out", str(out), "--chip-size", "64",
            "--overlap", "16", "-q"]
    proc = subprocess.Popen(args + ["--scheduler", "local:2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = False
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not killed:
        if list(out.rglob("*_filled.tif")):
            workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                       if "spawn_main" in " ".join(p.cmdline())]
            if workers:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed = True
        time.sleep(0.05)
    proc.communicate(timeout=300)
    assert killed, "the run ended before a worker could be killed"
    for path in out.rglob("*.tif"):
        if not path.name.startswith("."):
            assert cog_validate(str(path))[0], path
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    reference = tmp_path / "reference"
    subprocess.run(args[:6] + [str(reference)] + args[7:], check=True, capture_output=True, timeout=300)
    a, b = read_all(out), read_all(reference)
    assert len(a) == 4 * 24 and a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
