"""`utilise explain` on the real sample: attention that sums to 1, figures with content, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from utilise_cli.cli import app
from utilise_cli.explain import attention_to_occluded, explain_scenes
from utilise_cli.network import load_model

from .conftest import ROOT, shared_path

SAMPLE = ROOT / "sample_data"
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint():
    return shared_path("reference", "earthnet2021_seed0.pth")


def test_attention_rows_sum_to_one_over_dates(checkpoint):
    expl = explain_scenes(load_model(checkpoint), SAMPLE, chip_size=64, pixel=(70, 90))
    heads, t = expl.attention.shape[:2]
    assert expl.attention.shape == (heads, t, t, 64, 64) and t == 12
    np.testing.assert_allclose(expl.attention.sum(axis=2), 1.0, atol=1e-5)
    assert (expl.attention >= 0).all()
    assert expl.pixel == (70 - expl.origin[1], 90 - expl.origin[0])
    stats = attention_to_occluded(expl)
    assert stats["occluded_places"] == int((~expl.observed).sum()) > 0
    assert 0 < stats["clear_key_mean"] < 1 and 0 < stats["occluded_key_mean"] < 1


def test_explain_writes_figures_with_content(checkpoint, tmp_path):
    result = runner.invoke(app, ["explain", str(SAMPLE), "--out", str(tmp_path), "--checkpoint", str(checkpoint),
                                 "--chip-size", "64", "--date", "2021-05-01", "--head", "2"])
    assert result.exit_code == 0, result.output
    assert "attention when clear" in result.output
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"series.png", "attention_20210501.png", "attention_head2.png"}
    for name in names:
        image = np.asarray(Image.open(tmp_path / name).convert("L"), dtype=float)
        assert image.shape[0] > 200 and image.shape[1] > 600
        assert image.std() > 10  # not a blank canvas


@pytest.mark.parametrize("args, words", [
    (["--date", "2021-01-01"], "--date 2021-01-01 is not in the series"),
    (["--pixel", "500,3"], "--pixel 500,3 is outside the raster"),
    (["--chip", "99"], "--chip 99 does not exist"),
])
def test_bad_explain_input_is_one_line(checkpoint, tmp_path, args, words):
    result = runner.invoke(app, ["explain", str(SAMPLE), "--out", str(tmp_path / "x"), "--checkpoint",
                                 str(checkpoint), "--chip-size", "64"] + args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1 and words in result.output
