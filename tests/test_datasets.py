"""`utilise prepare` and `utilise simulate` on the real files of ../shared/data, and the torch Dataset."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr
from typer.testing import CliRunner

from utilise_cli.cli import app
from utilise_cli.datasets import DatasetFile, ScreeningRule, SequenceDataset, collate, prepare, simulate
from utilise_cli.datasets.simulate import choose_masked_frames
from utilise_cli.datasets.store import gaps_key
from utilise_cli.errors import DatasetError, SceneError
from utilise_cli.options import ReadOptions

from .conftest import shared_path

runner = CliRunner()
OCCLUDED_SCL = [3, 8, 9, 10]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sweden(tmp_path_factory):
    folder = shared_path("data", "greenearthnet", "geotiff_sweden_T34VCL")
    out = tmp_path_factory.mktemp("sweden") / "sweden.h5"
    report = prepare("geotiff", [folder], out)
    return folder, out, report


def test_geotiff_screening_agrees_with_the_scl_of_each_scene(sweden):
    folder, out, report = sweden
    expected = []
    for path in sorted(folder.glob("*.tif")):
        with rasterio.open(path) as src:
            scl = src.read(src.descriptions.index("SCL") + 1)
            b2 = src.read(src.descriptions.index("B2") + 1)
        valid = (b2 != 0) & ~np.isin(scl, [0, 1])
        cover = np.isin(scl, OCCLUDED_SCL)[valid].mean()
        if cover <= 0.01:
            expected.append(dt.date(int(path.name[:4]), int(path.name[4:6]), int(path.name[6:8])))
    assert 5 <= len(expected) < 12  # the series has both clear and cloudy dates
    with DatasetFile(out) as data:
        (item,) = list(data)
    s = item.series
    assert s.dates == expected
    assert [f["date"] for f in report["series"][0]["frames"] if f["kept"]] == [d.isoformat() for d in expected]
    assert s.frames.shape[1:] == (4, 165, 149) and s.bands == ["B2", "B3", "B4", "B8"]
    assert np.nanmin(s.frames) >= 0 and np.nanmax(s.frames) <= 1
    assert "32634" in s.crs and s.transform[0] == 20.0
    # the cloudy dates (at least 10 % cover) are kept as mask shapes for gap simulation
    assert s.library is not None and len(s.library) == len(s.library_dates) >= 1
    assert all(m.mean() >= 0.1 for m in s.library)
    assert json.loads((out.parent / "sweden.h5.report.json").read_text())["kept_frames"] == len(expected)


@pytest.mark.parametrize("name", ["JAS2021_replicated_minicube_0_29SND_39.29_-8.56.nc",
                                  "MJJ2021_replicated_minicube_225_34TET_47.37_22.05.nc"])
def test_minicube_keeps_the_scl_clear_acquisitions(tmp_path, name):
    path = shared_path("data", "greenearthnet", "minicubes", name)
    report = prepare("minicube", [path], tmp_path / "cube.h5")
    ds = xr.open_dataset(path)
    acquired = ~np.isnan(ds.s2_B02.values).all(axis=(1, 2))
    cover = np.isin(ds.s2_SCL.values[acquired], OCCLUDED_SCL).mean(axis=(1, 2))
    times = ds.time.values[acquired]
    expected = [str(np.datetime_as_string(t, unit="D")) for t, c in zip(times, cover) if c <= 0.01]
    frames = report["series"][0]["frames"]
    assert len(frames) == acquired.sum() < len(ds.time)  # empty days are dropped, not screened
    assert [f["date"] for f in frames if f["kept"]] == expected
    with DatasetFile(tmp_path / "cube.h5") as data:
        s = data.read(data.names[0]).series
    assert s.bands == ["B02", "B03", "B04", "B8A"] and s.frames.shape == (len(expected), 4, 128, 128)


def test_worldcereal_uses_the_scl_of_the_20m_file(tmp_path):
    folder = shared_path("data", "worldcereal", "00002806639B424A")
    report = prepare("worldcereal", [folder], tmp_path / "wc.h5")
    assert report["kept_frames"] == 44  # the data README: SCL says 44 clear dates
    with DatasetFile(tmp_path / "wc.h5") as data:
        s = data.read(data.names[0]).series
    assert s.frames.shape[1:] == (4, 64, 64) and "32631" in s.crs and s.transform[0] == 10.0
    assert all(b > a for a, b in zip(s.dates, s.dates[1:]))


def test_geotiff_folders_on_two_grids_are_aligned_when_asked(tmp_path):
    portugal = shared_path("data", "greenearthnet", "geotiff_portugal")
    with pytest.raises(SceneError, match="--align"):  # decoded as fill decodes it: other grids need --align
        prepare("geotiff", [portugal], tmp_path / "pt.h5")
    # as the model card prepared it (given masks only: with the screen two frames exceed 1 % cover)
    report = prepare("geotiff", [portugal], tmp_path / "pt.h5",
                     read=ReadOptions(align=True, screen=False, mask_buffer=0))
    assert report["series"][0]["kept"] and len(report["series"][0]["frames"]) == 7
    report = prepare("geotiff", [shared_path("data", "greenearthnet", "geotiff_hu_ro")], tmp_path / "hu.h5")
    assert report["kept_frames"] == 5


def test_earthnet2021_context_and_target_are_joined_in_time(tmp_path):
    folder = shared_path("data", "earthnet2021", "iid_29SND")
    report = prepare("earthnet2021", [folder], tmp_path / "en.h5")
    series = {s["name"]: s for s in report["series"]}
    assert len(series) == 5
    joined = series["29SND_2017-06-30_2017-11-26_1081_1209_1721_1849_16_96_26_106"]
    context = np.load(folder / "context_29SND_2017-06-30_2017-11-26_1081_1209_1721_1849_16_96_26_106.npz")
    target = np.load(folder / "target_29SND_2017-06-30_2017-11-26_1081_1209_1721_1849_16_96_26_106.npz")
    frames = np.concatenate([context["highresdynamic"], target["highresdynamic"]], axis=-1)
    acquired = ~np.isnan(frames[:, :, 0]).all(axis=(0, 1))
    assert len(joined["frames"]) == acquired.sum()
    assert joined["frames"][0]["date"] == "2017-06-30"
    # a target-only cube starts 10 frames (50 days) after its start date, or later when frames are empty
    only = series["29SND_2017-06-20_2017-11-16_1977_2105_1721_1849_30_110_26_106"]
    first = np.load(folder / "target_29SND_2017-06-20_2017-11-16_1977_2105_1721_1849_30_110_26_106.npz")
    first_frame = int(np.argmax(~np.isnan(first["highresdynamic"][:, :, 0]).all(axis=(0, 1))))
    assert only["frames"][0]["date"] == (dt.date(2017, 6, 20) + dt.timedelta(days=5 * (10 + first_frame))).isoformat()


def test_earthnet2021_training_split_layout_reads_like_the_test_split(tmp_path):
    """The training split has 7 channels (B02 B03 B04 B8A, cloud probability, SCL, mask); built here
    from a real test cube."""
    src = shared_path("data", "earthnet2021", "iid_29SND",
                      "target_29SND_2017-06-20_2017-11-16_2617_2745_1465_1593_40_120_22_102.npz")
    cube = np.load(src)["highresdynamic"]
    mask = cube[:, :, 4:5]
    probability = (mask * 90).astype(np.float16)
    scl = np.where(mask > 0, 9, 4).astype(np.float16)
    train_cube = np.concatenate([cube[:, :, :4], probability, scl, mask], axis=2)
    (tmp_path / "train").mkdir()
    np.savez(tmp_path / "train" / src.name, highresdynamic=train_cube)
    a = prepare("earthnet2021", [src], tmp_path / "a.h5")
    b = prepare("earthnet2021", [tmp_path / "train"], tmp_path / "b.h5")
    assert a["series"][0]["frames"] == b["series"][0]["frames"]
    with DatasetFile(tmp_path / "a.h5") as fa, DatasetFile(tmp_path / "b.h5") as fb:
        np.testing.assert_array_equal(fa.read(fa.names[0]).series.frames, fb.read(fb.names[0]).series.frames)


def test_too_few_clear_frames_is_an_error_and_writes_nothing(tmp_path):
    path = shared_path("data", "openeo_gfmap", "test_optical_cube_v2.nc")
    result = runner.invoke(app, ["prepare", "openeo", str(path), "--out", str(tmp_path / "x.h5")])
    assert result.exit_code == 2
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ") and result.output.count("error:") == 1
    assert "clear frames" in message and path.name in message
    assert list(tmp_path.iterdir()) == []
    # looser screening keeps it: the error is about the data, not the reader
    report = prepare("openeo", [path], tmp_path / "x.h5", ScreeningRule(max_cover=0.5, min_frames=2))
    assert report["kept_series"] == 1


@pytest.mark.parametrize("args, words", [
    (["prepare", "tiff", "SRC"], "unknown format 'tiff'"),
    (["prepare", "minicube", "WC"], "missing variable"),
    (["prepare", "earthnet2021", "EMPTY"], "no acquisition"),
])
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, args, words):
    wc = shared_path("data", "worldcereal", "00002806639B424A")
    src = shared_path("data", "earthnet2021", "iid_29SND",
                      "target_29SND_2017-06-20_2017-11-16_953_1081_3641_3769_14_94_56_136.npz")
    empty = tmp_path / "empty"
    empty.mkdir()
    cube = np.load(src)["highresdynamic"]
    np.savez(empty / src.name, highresdynamic=np.full_like(cube, np.nan))
    paths = {"SRC": str(src), "WC": str(next(wc.glob("*_10m_*.nc"))), "EMPTY": str(empty)}
    out = tmp_path / "out"
    out.mkdir()
    result = runner.invoke(app, [paths.get(a, a) for a in args] + ["--out", str(out / "d.h5")])
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ") and result.output.count("error:") == 1
    assert words in message
    assert list(out.iterdir()) == []


def test_simulate_is_repeatable_never_masks_frame_0_and_reports_cover(sweden, tmp_path):
    _, prepared, _ = sweden
    masks = shared_path("data", "eolearn_cloudmasks")
    args = ["simulate", str(prepared), "--ratio", "0.5,0.8", "--masks", str(masks)]
    first = runner.invoke(app, args + ["--seed", "3", "--out", str(tmp_path / "a.h5")])
    again = runner.invoke(app, args + ["--seed", "3", "--out", str(tmp_path / "b.h5")])
    other = runner.invoke(app, args + ["--seed", "4", "--out", str(tmp_path / "c.h5")])
    assert first.exit_code == again.exit_code == other.exit_code == 0, first.output
    assert sha256(tmp_path / "a.h5") == sha256(tmp_path / "b.h5") != sha256(tmp_path / "c.h5")
    assert "ratio 0.50:" in first.output and "ratio 0.80:" in first.output and "cover of a masked frame" in first.output
    with DatasetFile(tmp_path / "a.h5") as data:
        assert data.kind == "simulated" and data.ratios == ["ratio_0.50", "ratio_0.80"]
        item = data.read(data.names[0])
    for gaps in item.gaps.values():
        assert not gaps.mask[0].any() and 0 not in gaps.masked_frames
        covers = gaps.mask.reshape(len(gaps.mask), -1).mean(axis=1)
        assert np.array_equal(np.flatnonzero(covers), np.sort(gaps.masked_frames))
        assert (covers[gaps.masked_frames] >= 0.1).all()


def test_masked_frame_counts_follow_the_paper():
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(2000):
        frames = choose_masked_frames(8, 0.5, rng)
        assert 0 not in frames and len(set(frames)) == len(frames)
        counts.append(len(frames))
    # n uniform in 1..8, ceil(n / 2) masked: 1, 1, 2, 2, 3, 3, 4, 4 -> mean 2.5
    assert set(counts) == {1, 2, 3, 4} and abs(np.mean(counts) - 2.5) < 0.1


def test_simulate_without_masks_for_a_clear_series_asks_for_a_library(tmp_path):
    prepared = tmp_path / "hu.h5"
    prepare("geotiff", [shared_path("data", "greenearthnet", "geotiff_hu_ro")], prepared)
    result = runner.invoke(app, ["simulate", str(prepared), "--out", str(tmp_path / "s.h5")])
    assert result.exit_code == 2 and "--masks" in result.output
    assert not (tmp_path / "s.h5").exists()


def test_torch_dataset_crops_windows_augments_and_collates(sweden, tmp_path):
    _, prepared, _ = sweden
    simulate(prepared, tmp_path / "sim.h5", seed=0)
    train = SequenceDataset([prepared], crop=32, max_frames=5, augment=True, samples=6, seed=1)
    batch = collate([train[i] for i in range(3)])
    assert batch["x"].shape == (3, 5, 4, 32, 32) and batch["days"].shape == (3, 5)
    for x, y, gaps, valid in zip(batch["x"], batch["y"], batch["gaps"], batch["valid"]):
        shown = (~gaps & valid)[:, None].expand_as(x)
        assert torch.equal(x[shown], y[shown])  # the same rotation and flip for input, target and gaps
        assert (x[gaps[:, None].expand_as(x)] == 1).all()  # gaps are set to 1
        assert not gaps[0].any()
    # mixed lengths: padded at the end with zero frames on day 0, flagged in "frames"
    whole = SequenceDataset([tmp_path / "sim.h5"], ratio_key=gaps_key(0.5), max_frames=0)
    short = dict(whole[0])
    short.update({k: short[k][:3] for k in ("x", "y", "days", "gaps", "valid")})
    batch = collate([whole[0], short])
    t = len(whole[0]["days"])
    assert batch["frames"].tolist() == [[True] * t, [True] * 3 + [False] * (t - 3)]
    assert (batch["x"][1, 3:] == 0).all() and (batch["days"][1, 3:] == 0).all()


def test_sen12mscrts_layout_pairs_s1_by_time_and_appends_it_unmasked(tmp_path):
    """SEN12MS-CR-TS layout built from the real Sweden scenes: 13 S2 bands, a cloud mask from SCL, and S1
    VV/VH (dB) stand-ins derived from the real NIR band so each date's SAR is distinct."""
    folder = shared_path("data", "greenearthnet", "geotiff_sweden_T34VCL")
    names = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B9", "B11", "B12"]  # no B10 in L2A
    roi = tmp_path / "ROIs1158" / "106"
    for t, path in enumerate(sorted(folder.glob("*.tif"))):
        date = f"{path.name[:4]}-{path.name[4:6]}-{path.name[6:8]}"
        with rasterio.open(path) as src:
            s2 = np.stack([src.read(src.descriptions.index(n) + 1)[:64, :64] for n in names])
            scl = src.read(src.descriptions.index("SCL") + 1)[:64, :64]
            profile = {"driver": "GTiff", "height": 64, "width": 64, "crs": src.crs, "transform": src.transform}
        for sensor, data, dtype in (("S2", s2, "uint16"), ("S1", None, "float32")):
            (roi / sensor / str(t)).mkdir(parents=True, exist_ok=True)
            name = roi / sensor / str(t) / f"{sensor.lower()}_ROIs1158_106_ImgNo_{t}_{date}_patch_7.tif"
            if data is None:
                nir = s2[7].astype(np.float32) / 10000
                data = np.stack([10 * np.log10(nir + 0.01) - 5, 10 * np.log10(nir + 0.01) - 12]).astype(dtype)
            with rasterio.open(name, "w", count=len(data), dtype=dtype, **profile) as dst:
                dst.write(data)
            if sensor == "S2":
                with rasterio.open(name.with_name(name.stem + "_mask.tif"), "w", count=1, dtype="uint8", **profile) as dst:
                    dst.write(np.isin(scl, OCCLUDED_SCL).astype("uint8")[None])
    report = prepare("sen12mscrts", [tmp_path / "ROIs1158"], tmp_path / "crts.h5", ScreeningRule(min_frames=3))
    assert report["series"][0]["name"] == "ROIs1158_106_patch7" and len(report["series"][0]["frames"]) == 12
    with DatasetFile(tmp_path / "crts.h5") as data:
        s = data.read(data.names[0]).series
    assert s.sar is not None and s.sar.shape == (len(s.dates), 2, 64, 64) and s.bands == ["B2", "B3", "B4", "B8"]
    sample = SequenceDataset([tmp_path / "crts.h5"], max_frames=0, library=[np.ones((8, 8), bool)])[0]
    assert sample["x"].shape[1] == 6  # 4 optical + VV + VH
    assert (sample["x"][:, 4:] < 1).any()  # SAR is not blanked in the gaps
    # the SAR of the frames with a gap is passed through unchanged
    sar_unit = np.clip((s.sar + 25) / 25, 0, 1)
    np.testing.assert_allclose(sample["x"][:, 4:].numpy(), sar_unit, atol=1e-6)
    (tmp_path / "ROIs1158" / "106" / "S2" / "0").joinpath(
        next(p.name for p in (roi / "S2" / "0").glob("*_mask.tif"))).unlink()
    with pytest.raises(DatasetError, match="no cloud mask beside it"):
        prepare("sen12mscrts", [tmp_path / "ROIs1158"], tmp_path / "y.h5")
