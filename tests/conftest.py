"""Shared fixtures. Tests that need ../shared (the project's real data) skip with a reason where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

ROOT = Path(__file__).resolve().parents[1]
# UTILISE_SHARED points elsewhere, e.g. on a GPU machine that has only a copy of the reference vectors.
SHARED = Path(os.environ.get("UTILISE_SHARED", ROOT.parent / "shared"))


def read_outputs(folder: Path) -> dict[str, np.ndarray]:
    """Every ``*_filled*.tif`` of a fill's output folder (COGs and flags): file name -> its bands."""
    out = {}
    for path in sorted(folder.glob("*_filled*.tif")):
        with rasterio.open(path) as src:
            out[path.name] = src.read()
    return out


def fills_as_the_sample(folder: Path, tmp_path: Path, *args: str) -> None:
    """`utilise fill --method linear ARGS` of ``folder`` and of sample_data write the same 24 files, value for
    value: a folder that stores the sample otherwise is read as what it is. ``args`` go to both fills."""
    from typer.testing import CliRunner

    from utilise_cli.cli import app

    for source, out in ((folder, "folder_out"), (ROOT / "sample_data", "sample_out")):
        result = CliRunner().invoke(app, ["fill", str(source), "--out", str(tmp_path / out), "--method", "linear",
                                          "-q", *args])
        assert result.exit_code == 0, result.output
    got, want = read_outputs(tmp_path / "folder_out"), read_outputs(tmp_path / "sample_out")
    assert len(got) == 24 and got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)


def one_line_error(result, *words: str) -> None:
    """A CLI result that failed as user errors must: exit 2, one line starting 'error: ', naming ``words``."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the calling test when that file is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared data beside the clone)")
    return path


@pytest.fixture
def reference_dir() -> Path:
    return shared_path("reference")


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """Prepared real series (HU/RO, Sweden), their simulations and a tiny training configuration."""
    from utilise_cli.datasets import prepare, simulate

    root = tmp_path_factory.mktemp("data")
    prepare("geotiff", [shared_path("data", "greenearthnet", "geotiff_hu_ro")], root / "hu.h5")
    prepare("geotiff", [shared_path("data", "greenearthnet", "geotiff_sweden_T34VCL")], root / "se.h5")
    simulate(root / "hu.h5", root / "val.h5", seed=0, ratios=[1.0], masks=[shared_path("data", "eolearn_cloudmasks")])
    simulate(root / "se.h5", root / "se_sim.h5", seed=0)
    config = {"train": [str(root / "hu.h5")], "val": [str(root / "val.h5")], "val_ratio": "ratio_1.00",
              "masks": [str(shared_path("data", "eolearn_cloudmasks"))],
              "network": {"encoder_widths": [8, 8, 16], "decoder_widths": [8, 8, 16]},
              "batch_size": 2, "crop": 32, "max_frames": 4, "epochs": 1, "steps_per_epoch": 2, "device": "cpu"}
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    return root
