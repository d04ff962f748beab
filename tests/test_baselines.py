"""Interpolation baselines along time on small real inputs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import rasterio
import torch

from utilise_cli.baselines import ANOMALY_SIGMA_PX, gaussian_blur, interpolate, nanquantile

from .conftest import ROOT

SAMPLE = ROOT / "sample_data"


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


@pytest.mark.parametrize("height, width", [(128, 128), (77, 128), (128, 33), (10, 12), (256, 200)])
def test_the_anomaly_blur_equals_scipy_s_gaussian_filter(height, width):
    # The blur is taken in bands that skip its matrices' zeros: a band that leaves out a row within the kernel's
    # reach, or folds an edge wrongly, shows here. Real reflectance: a sample scene, tiled up to 256 x 200.
    from scipy.ndimage import gaussian_filter

    with rasterio.open(SAMPLE / "20210403_S2_T34VCL.tif") as src:
        scene = np.tile(src.read().astype(np.float32) * np.float32(1e-4), (1, 2, 2))[:, :height, :width]
    blurred = gaussian_blur(torch.from_numpy(np.ascontiguousarray(scene))[None], ANOMALY_SIGMA_PX)[0].numpy()
    expected = np.stack([gaussian_filter(band, ANOMALY_SIGMA_PX, mode="reflect", truncate=4.0) for band in scene])
    assert np.abs(blurred - expected).max() < 1e-6


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


def test_adjusted_baseline_fits_a_dates_contrast_not_only_its_offset(reference_dir):
    # A real EarthNet2021 series whose date 4 is its neighbours' blend at 1.5x the contrast (greener fields,
    # a sharper scene): its anomaly grows with the interpolated value, which an offset alone cannot follow.
    io = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    series, days = io["y"][0].copy(), io["position_days"][0]
    observed = np.ones(series.shape[:1] + series.shape[2:], bool)
    others = observed.copy()
    others[4] = False
    blend = interpolate("linear", series, others, days)[4]
    series[4] = blend + 0.5 * (blend - blend.mean(axis=(-2, -1), keepdims=True))
    observed[4, 20:40, 20:40] = False
    truth = series[4][:, 20:40, 20:40]
    offset = blend[:, 20:40, 20:40] + np.median(series[4] - blend, axis=(-2, -1), keepdims=True)
    adjusted = interpolate("adjusted", series, observed, days)[4][:, 20:40, 20:40]
    assert np.abs(adjusted - truth).mean() < 0.5 * np.abs(offset - truth).mean()


@pytest.mark.parametrize("like", [0, 2])
def test_adjusted_baseline_leans_towards_the_neighbour_a_date_resembles(like):
    # Five clear dates of the sample (Sweden, spring), of which the second already looks like the first or the
    # third (a green-up, a mowing came before or after it): linear interpolation blends both by their days.
    # Fitted on the date's observed pixels, the lean finds which one it is like: about a quarter of linear's
    # error under the block (0.26-0.27); with the gain and the offset alone, 0.40.
    frames, days = [], []
    for name in ("20210418", "20210513", "20210602", "20210620", "20210702"):
        with rasterio.open(SAMPLE / f"{name}_S2_T34VCL.tif") as src:
            bands = [src.descriptions.index(b) + 1 for b in ("B2", "B3", "B4", "B8")]
            frames.append(src.read(bands, window=((40, 104), (40, 104))) / 10_000)
        days.append(dt.date(int(name[:4]), int(name[4:6]), int(name[6:])).timetuple().tm_yday)
    series = np.stack(frames).astype(np.float32)
    series[1] = series[like]
    observed = np.ones((5, 64, 64), bool)
    observed[1, 20:40, 20:40] = False
    truth = series[1][:, 20:40, 20:40]
    linear = np.abs(interpolate("linear", series, observed, np.array(days))[1][:, 20:40, 20:40] - truth).mean()
    adjusted = np.abs(interpolate("adjusted", series, observed, np.array(days))[1][:, 20:40, 20:40] - truth).mean()
    assert adjusted < 0.33 * linear


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


def test_linear_interpolation_weighs_by_days_not_by_frame_index():
    days = np.array([0.0, 10.0, 40.0])
    reflectance = np.zeros((3, 1, 1, 1), np.float32)
    reflectance[2] = 0.4
    observed = np.array([True, False, True]).reshape(3, 1, 1)
    filled = interpolate("linear", reflectance, observed, days)
    assert filled[1, 0, 0, 0] == pytest.approx(0.1)  # 10 of 40 days along; by frame index it would be 0.2
    assert interpolate("closest", reflectance, observed, days)[1, 0, 0, 0] == 0.0


@pytest.mark.parametrize("method", ["linear", "closest", "last", "next", "adjusted"])
def test_a_batch_of_series_is_filled_as_each_series_alone(method, reference_dir):
    # Real EarthNet2021 series with real-shaped gaps; a batch mixes a series whose dates are all clear, one with
    # gaps at its first and last dates and a date never observed (in the middle, so that a series' ends must not
    # borrow from its neighbours in the batch), and one with the real gaps, as chips of a fill do.
    io = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    series, days = io["y"][0, :, :, :48, :48], io["position_days"][0]
    hidden = io["masks"][0, :, 0, :48, :48] > 0.5
    clear = np.ones_like(hidden)
    gappy = ~hidden
    gappy[0, :10], gappy[-1, -10:], gappy[3] = False, False, False
    batch = np.stack([clear, gappy, ~hidden])
    filled = interpolate(method, np.stack([series] * 3), batch, days)
    for i, observed in enumerate(batch):
        assert np.array_equal(filled[i], interpolate(method, series, observed, days), equal_nan=True), i
    assert np.array_equal(filled[0], series)  # nothing to fill: passed through


def test_the_anomaly_clip_quantiles_equal_torch_nanquantile(reference_dir):
    # The adjusted baseline's clip quantiles sort with numpy on the CPU; they must pick torch's ranks. Real
    # reflectance with real cloud masks as NaN, a row with one number, rows with none, and a short row whose
    # ranks fall between two numbers.
    io = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    values = torch.from_numpy(io["y"][0].reshape(io["y"].shape[1], 4, -1)[:, :, ::3].copy())
    cloudy = torch.from_numpy(io["masks"][0, :, 0].reshape(len(values), 1, -1)[:, :, ::3] > 0.5)
    values[cloudy.expand_as(values)] = np.nan
    values[1], values[2, :, 1:] = np.nan, np.nan
    short = torch.tensor([[0.3, np.nan, 0.1, 0.7, 0.2]])
    for rows in (values, short):
        for q in ([0.1, 0.5, 0.9], [0.0, 0.25, 1.0]):
            q = torch.tensor(q)
            expected = torch.nanquantile(rows, q, dim=-1)
            assert torch.equal(nanquantile(rows, q).nan_to_num(-1.0), expected.nan_to_num(-1.0))
    assert nanquantile(values, torch.tensor([0.5]))[0, 1].isnan().all()
