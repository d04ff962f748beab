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


def test_a_long_series_is_explained_in_pictures_people_can_open(tmp_path):
    """24 dates (the sample twice, a year apart): the series and per-date attention wrap onto rows of at most
    12 dates and the date-by-date attention is one matrix, instead of pictures 4,000 px wide and a grid of 24 x 24
    maps (70 dates: 10,000 x 10,000 px, over two minutes)."""
    folder = tmp_path / "long"
    folder.mkdir()
    for path in SAMPLE.glob("*.tif"):
        for year in ("2020", "2021"):
            (folder / (year + path.name[4:])).symlink_to(path)
    result = runner.invoke(app, ["explain", str(folder), "--out", str(tmp_path / "out"), "--chip-size", "64",
                                 "--date", "2020-05-01"])
    assert result.exit_code == 0, result.output
    assert "24 dates" in result.output
    sizes = {p.name: Image.open(p).size for p in (tmp_path / "out").iterdir()}
    assert set(sizes) == {"series.png", "attention_20200501.png", "attention_head0.png"}
    assert all(w <= 2500 for w, _ in sizes.values()), sizes  # 12 dates a row: 2,200 px
    assert sizes["series.png"][1] >= 2 * 396  # two pairs of rows (input, filled), 396 px each
    width, height = sizes["attention_head0.png"]
    assert width < 2000 and height < 2000, sizes  # one matrix, not 24 x 24 maps (3,400 px a side)
    matrix = np.asarray(Image.open(tmp_path / "out" / "attention_head0.png").convert("L"), dtype=float)
    assert matrix.std() > 10


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
