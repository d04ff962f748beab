"""Dates from names and tags, scene discovery, mask decoding, chips and baselines on small real inputs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from utilise_cli.baselines import interpolate
from utilise_cli.chips import blend_window, chip_starts, ramp_window
from utilise_cli.cube import MaskRule, decode_mask
from utilise_cli.dates import date_from_name, date_from_tags, day_positions
from utilise_cli.scenes import band_key, discover_scenes

from .conftest import shared_path


@pytest.mark.parametrize("name,expected", [
    ("20210403T101021_20210403T101021_T34VCL_Surface_Reflectance.tif", dt.date(2021, 4, 3)),
    ("S2B_MSIL2A_20200518T102029_N0214_R065_T32TPS_20200520T134017.tif", dt.date(2020, 5, 18)),
    ("T32TPS_20200518T102031_B04_10m.jp2", dt.date(2020, 5, 18)),
    ("scene_2020-05-18.tif", dt.date(2020, 5, 18)),
    ("scene_20200518.tif", dt.date(2020, 5, 18)),
    ("HLS.S30.T10SEG.2020123T184919.v2.0.B04.tif", dt.date(2020, 5, 2)),
    ("band0_sr_june_28_2021.tif", dt.date(2021, 6, 28)),
    ("band10_sr_august_17_2021.tif", dt.date(2021, 8, 17)),
    ("export_28-Jun-2021.tif", dt.date(2021, 6, 28)),
    ("no_date_here.tif", None),
    ("tile_99999999.tif", None),
])
def test_dates_from_names(name, expected):
    assert date_from_name(name) == expected


def test_user_date_pattern_and_tags():
    assert date_from_name("img_03.04.2021.tif", r"(?P<day>\d{2})\.(?P<month>\d{2})\.(?P<year>\d{4})") == dt.date(2021, 4, 3)
    assert date_from_tags({"TIFFTAG_DATETIME": "2021:04:03 10:10:21"}) == dt.date(2021, 4, 3)
    assert date_from_tags({"system:time_start": "1617444621000"}) == dt.date(2021, 4, 3)
    assert day_positions([dt.date(2021, 1, 1), dt.date(2021, 4, 3), dt.date(2022, 1, 2)]) == [0, 92, 366]


def test_band_names():
    assert [band_key(b) for b in ["B02", "b2", "S2-L2A-B02", "s2_B8A", "SCL"]] == ["B2", "B2", "B2", "B8A", "SCL"]


def test_discovers_sweden_scenes_with_scl_band_inside():
    folder = shared_path("data", "greenearthnet", "geotiff_sweden_T34VCL")
    scenes = discover_scenes(folder)
    assert len(scenes) == 12 and scenes[0].date == dt.date(2021, 4, 3)
    assert all(s.mask_kind == "scl" and list(s.bands) == ["B2", "B3", "B4", "B8"] for s in scenes)
    assert scenes[0].bands["B8"].index == 8  # B1 B2 ... B8 in the file's band descriptions


def test_discovers_spelled_out_dates_in_portugal():
    scenes = discover_scenes(shared_path("data", "greenearthnet", "geotiff_portugal"))
    assert [s.date.month for s in scenes] == [6, 7, 8, 8, 9, 9, 10]


def test_mask_decoding():
    scl = np.array([0, 1, 3, 4, 8, 9, 10, 11])
    occluded, nodata = decode_mask(scl, MaskRule("scl"))
    assert occluded.tolist() == [False, False, True, False, True, True, True, False]
    assert nodata.tolist() == [True, True] + [False] * 6
    occluded, _ = decode_mask(np.array([10, 49, 50, 90]), MaskRule("probability", threshold=50))
    assert occluded.tolist() == [False, False, True, True]
    assert decode_mask(np.array([0, 1, 2]), MaskRule("binary"))[0].tolist() == [False, True, True]


def test_chip_grid_snaps_last_chip_to_the_edge():
    assert chip_starts(165, 128, 32) == [0, 37]
    assert chip_starts(300, 128, 32) == [0, 96, 172]
    assert chip_starts(100, 128, 32) == [0]
    ramp = ramp_window(128, 32)
    assert ramp[32:96].min() == 1.0 and ramp[0] < 0.01 and ramp.min() >= 1e-3
    assert blend_window(64, 16).shape == (64, 64)


def test_complementary_ramps_sum_to_one_across_an_overlap():
    # Two chips overlapping by 32 px: their ramps add up to ~1, so blending leaves no bump or dip.
    ramp = ramp_window(128, 32)
    assert np.allclose(ramp[96:] + ramp[:32], 1.0, atol=1e-3)


def test_linear_and_closest_baselines_on_a_real_pixel_series():
    days = np.array([0, 10, 20, 30, 45])
    refl = np.array([0.1, 0.9, 0.9, 0.4, 0.9], np.float32).reshape(5, 1, 1, 1)
    observed = np.array([True, False, False, True, False]).reshape(5, 1, 1)
    linear = interpolate("linear", refl, observed, days).ravel()
    assert np.allclose(linear, [0.1, 0.2, 0.3, 0.4, 0.4])
    closest = interpolate("closest", refl, observed, days).ravel()
    assert np.allclose(closest, [0.1, 0.1, 0.4, 0.4, 0.4])
    never = interpolate("linear", refl, np.zeros_like(observed), days)
    assert np.isnan(never).all()


def test_adjusted_baseline_carries_a_dates_own_anomaly_into_its_gaps(reference_dir):
    # A real EarthNet2021 series; one date is made 0.04 brighter (haze) and a block of it hidden.
    io = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    series, days = io["y"][0].copy(), io["position_days"][0]
    observed = np.ones(series.shape[:1] + series.shape[2:], bool)
    series[4] += 0.04
    observed[4, 20:40, 20:40] = False
    truth = series[4][:, 20:40, 20:40]
    linear = interpolate("linear", series, observed, days)[4][:, 20:40, 20:40]
    adjusted = interpolate("adjusted", series, observed, days)
    assert np.abs(adjusted[4][:, 20:40, 20:40] - truth).mean() < 0.5 * np.abs(linear - truth).mean()
    # Observed pixels pass through; the values under the gap are never read.
    assert np.array_equal(adjusted[observed[:, None].repeat(4, 1)], series[observed[:, None].repeat(4, 1)])
    series[4][:, 20:40, 20:40] = 5.0
    assert np.array_equal(interpolate("adjusted", series, observed, days), adjusted)


def test_adjusted_equals_linear_when_dates_have_no_anomaly():
    days = np.array([0, 10, 20, 30, 45])
    # reflectance linear in time
    refl = np.broadcast_to((days / 45 * 0.4 + 0.1).astype(np.float32).reshape(5, 1, 1, 1),
                           (5, 2, 16, 16)).copy()
    observed = np.ones((5, 16, 16), bool)
    observed[2, 4:12, 4:12] = False
    observed[3] = False  # a date with no observed pixel gets no anomaly
    adjusted = interpolate("adjusted", refl, observed, days)
    assert np.allclose(adjusted, interpolate("linear", refl, observed, days), atol=1e-6)
    assert np.allclose(adjusted, refl, atol=1e-6)


def test_adjusted_baseline_does_not_spread_an_unmasked_cloud_edge_into_the_gap(reference_dir):
    # Real masks miss the bright rim of a cloud: a 2-pixel rim of +0.3 around the hidden block.
    io = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    series, days = io["y"][0].copy(), io["position_days"][0]
    observed = np.ones(series.shape[:1] + series.shape[2:], bool)
    observed[4, 20:40, 20:40] = False
    truth = series[4][:, 20:40, 20:40].copy()
    series[4][:, 18:42, 18:42] += 0.3
    series[4][:, 20:40, 20:40] = truth
    linear = np.abs(interpolate("linear", series, observed, days)[4][:, 20:40, 20:40] - truth).mean()
    adjusted = np.abs(interpolate("adjusted", series, observed, days)[4][:, 20:40, 20:40] - truth).mean()
    assert adjusted < linear + 0.005
