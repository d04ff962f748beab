"""What the network is given and what fill makes of its output: one chip of the sample through `fill` equals
the reference network run by hand on an input built here from the raw files."""

from __future__ import annotations

import datetime as dt

import numpy as np
import rasterio
import torch

from utilise_cli.fill import FillOptions, fill
from utilise_cli.options import ReadOptions
from utilise_cli.inference import network_input
from utilise_cli.network import load_model

from .conftest import ROOT, shared_path

SAMPLE = ROOT / "sample_data"


def test_hidden_and_missing_pixels_are_set_to_one():
    reflectance = np.full((3, 2, 4, 4), 0.3, np.float32)
    reflectance[1, :, 0, 0] = np.nan
    hidden = np.zeros((3, 4, 4), bool)
    hidden[2, 1:3, 1:3] = True
    x = network_input(reflectance, hidden)
    assert (x[2, :, 1:3, 1:3] == 1.0).all() and (x[1, :, 0, 0] == 1.0).all()
    assert (x[0] == np.float32(0.3)).all()


def test_the_residual_network_sees_a_pixel_missing_one_band_as_a_gap_and_its_neighbours_fill_it():
    # Real chips of six sample dates; on one date a block has no NIR (B8) though nothing hides it.
    scenes = sorted(SAMPLE.glob("*_T34VCL.tif"))[:6]
    series = []
    for scene in scenes:
        with rasterio.open(scene) as src:
            series.append(src.read(window=((40, 104), (40, 104))).astype(np.float32) * np.float32(1e-4))
    reflectance = np.stack(series)
    assert (reflectance > 0).all()  # inside the scenes' footprint
    reflectance[3, 3, 20:30, 20:30] = np.nan
    days = np.array([(dt.datetime.strptime(s.name[:8], "%Y%m%d").date() - dt.date(2021, 1, 1)).days
                     for s in scenes], np.float32)
    x = network_input(reflectance, np.zeros(reflectance[:, 0].shape, bool), days, residual="adjusted")
    assert (x[3, 4, 20:30, 20:30] == 1.0).all() and x[3, 4].sum() == 100  # the block alone is a gap
    nir = x[3, 3, 20:30, 20:30]  # filled from the other dates, not the gap value
    others = np.delete(reflectance[:, 3, 20:30, 20:30], 3, axis=0)
    assert (nir > others.min(axis=0) - 0.05).all() and (nir < others.max(axis=0) + 0.05).all()


def test_one_chip_through_fill_equals_the_reference_network_on_a_hand_built_input(tmp_path):
    checkpoint = shared_path("reference", "earthnet2021_seed0.pth")
    fill(SAMPLE, tmp_path, FillOptions(method="utilise", checkpoint=checkpoint, chip_size=168, overlap=0,
                                       precision="fp32", regenerate_all=True, dtype="float32",
                                       read=ReadOptions(screen=False, mask_buffer=0)))  # the masks as given
    scenes = sorted(SAMPLE.glob("*_T34VCL.tif"))
    inputs, days, filled = [], [], []
    for scene in scenes:
        with rasterio.open(scene) as src, rasterio.open(scene.with_name(scene.stem + "_mask.tif")) as mask:
            dn, cloud = src.read(), mask.read(1)
        observed = (cloud == 0) & (dn != 0).all(axis=0)
        inputs.append(np.where(observed, dn.astype(np.float32) * np.float32(1e-4), np.float32(1.0)))
        date = dt.datetime.strptime(scene.name[:8], "%Y%m%d").date()
        days.append((date - dt.date(date.year, 1, 1)).days)
        with rasterio.open(tmp_path / f"{scene.name[:8]}_filled.tif") as out:
            filled.append(out.read())
    x = np.stack(inputs)  # T x C x 149 x 165
    h, w = x.shape[-2:]
    padded = np.pad(x, ((0, 0), (0, 0), (0, 168 - h), (0, 168 - w)), mode="edge")
    model = load_model(checkpoint)
    with torch.no_grad():
        expected = model(torch.from_numpy(padded)[None], torch.tensor([days], dtype=torch.float32))[0]
    expected = expected.numpy()[..., :h, :w].clip(0, 1)
    out = np.stack(filled)
    seen = ~np.isnan(out)
    assert seen.mean() > 0.8
    np.testing.assert_allclose(out[seen], expected[seen], atol=2e-5)


def test_precision_auto_follows_the_hardware_and_costs_little(tmp_path):
    from utilise_cli.hardware import cpu_has_bf16, resolve_precision

    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp16", "cpu") == "fp16"
    exact = fill(SAMPLE, tmp_path / "fp32", FillOptions(method="utilise", precision="fp32", dtype="float32"))
    half = fill(SAMPLE, tmp_path / "bf16", FillOptions(method="utilise", precision="bf16", dtype="float32"))
    a = np.stack([rasterio.open(p).read() for p in exact.outputs])
    b = np.stack([rasterio.open(p).read() for p in half.outputs])
    seen = ~np.isnan(a)
    mse = float(np.mean((a[seen] - b[seen]) ** 2))
    assert 0 < mse and -10 * np.log10(mse) >= 50  # bf16 changes the fill, by little


def test_the_network_input_is_mirrored_up_to_its_size_like_numpy_symmetric_padding():
    from utilise_cli.inference import _mirror_index

    axis = np.arange(5)
    for padded in (5, 8, 16, 23):  # none, less than the axis, more than twice the axis
        expected = np.pad(axis, (0, padded - 5), mode="symmetric")
        assert np.array_equal(_mirror_index(5, padded, torch.device("cpu")).numpy(), expected), padded


def test_the_network_decodes_only_a_chips_dates_with_something_to_fill_and_keeps_the_others_as_they_came():
    from utilise_cli.inference import NetworkPredictor
    from utilise_cli.plan import load_predictor

    # Two real 64-px chips of the sample with their own masks; the first gets a corner never observed, as at the
    # edge of a swath, which has nothing to fill on any date.
    scenes = sorted(SAMPLE.glob("*_T34VCL.tif"))
    chips = []
    for r, c in ((16, 16), (48, 48)):
        refl, observed = [], []
        for scene in scenes:
            with rasterio.open(scene) as src, rasterio.open(scene.with_name(scene.stem + "_mask.tif")) as mask:
                dn, cloud = src.read(window=((r, r + 64), (c, c + 64))), mask.read(1, window=((r, r + 64), (c, c + 64)))
            seen = (cloud == 0) & (dn != 0).all(axis=0)
            refl.append(np.where(seen, dn.astype(np.float32) * np.float32(1e-4), np.nan))
            observed.append(seen)
        chips.append((np.stack(refl), np.stack(observed)))
    reflectance, observed = (np.stack(a) for a in zip(*chips))  # B x T x C x h x w, B x T x h x w
    observed[0, :, :8, :8] = False
    days = np.array([(dt.datetime.strptime(s.name[:8], "%Y%m%d").date() - dt.date(2021, 1, 1)).days
                     for s in scenes], np.float32)
    fill_dates = (~observed & observed.any(axis=1, keepdims=True)).any(axis=(-2, -1))
    assert fill_dates.any(axis=1).all() and (~fill_dates).any(axis=1).all()
    network = load_predictor(FillOptions(method="utilise", precision="fp32"))[0]
    assert not network.every_date and load_predictor(FillOptions(method="utilise", regenerate_all=True))[0].every_date
    every = NetworkPredictor(network.model, precision="fp32", every_date=True)
    out, full = network(reflectance, observed, days), every(reflectance, observed, days)
    as_they_came = np.where(observed[:, :, None], reflectance, np.nan)
    assert np.array_equal(out[~fill_dates], as_they_came[~fill_dates], equal_nan=True)
    np.testing.assert_allclose(out[fill_dates], full[fill_dates], atol=1e-6)  # as if every date were decoded
    assert np.isfinite(full).all() and np.nanmax(np.abs(full - as_they_came)[~fill_dates]) > 1e-3
