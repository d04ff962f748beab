"""Decoding masks and reflectance: the cube that fill, explain and prepare share."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from utilise_cli.cli import app
from utilise_cli.cube import SAMPLE_PX, SAMPLE_SPOTS, MaskRule, decode_mask, open_folder, read_rows, sample_values
from utilise_cli.datasets import DatasetFile
from utilise_cli.explain import explain_scenes
from utilise_cli.network import load_model
from utilise_cli.options import ReadOptions
from utilise_cli.weights import DEFAULT_WEIGHTS

from .conftest import ROOT

SAMPLE = ROOT / "sample_data"
runner = CliRunner()


def test_mask_decoding():
    scl = np.array([0, 1, 3, 4, 8, 9, 10, 11])
    occluded, nodata = decode_mask(scl, MaskRule("scl"))
    assert occluded.tolist() == [False, False, True, False, True, True, True, False]
    assert nodata.tolist() == [True, True] + [False] * 6
    occluded, _ = decode_mask(np.array([10, 49, 50, 90]), MaskRule("probability", threshold=50))
    assert occluded.tolist() == [False, False, True, True]
    assert decode_mask(np.array([0, 1, 2]), MaskRule("binary"))[0].tolist() == [False, True, True]


def _rewritten(folder: Path, out: Path, transform, nodata: float | None = None) -> Path:
    """A copy of the sample whose band values go through ``transform(dn)`` (masks copied as they are)."""
    out.mkdir()
    for path in sorted(folder.glob("*.tif")):
        if "mask" in path.stem:
            shutil.copy(path, out / path.name)
            continue
        with rasterio.open(path) as src:
            profile, data, names = src.profile, src.read(), src.descriptions
        profile.update(nodata=nodata)
        with rasterio.open(out / path.name, "w", **profile) as dst:
            dst.write(transform(data).astype(profile["dtype"]))
            dst.descriptions = names
    return out


def test_fill_explain_and_prepare_decode_a_folder_alike_with_the_same_offset(tmp_path):
    # +1000 on every valid DN, as raw processing-baseline 04.00 data carry it
    shifted = _rewritten(SAMPLE, tmp_path / "shifted", lambda dn: np.where(dn == 0, 0, dn.astype(np.int32) + 1000))
    # The screen off: its thresholds would turn float rounding of the two decodings into a few flipped pixels.
    read = ["--offset", "-0.1", "--no-screen"]
    filled = runner.invoke(app, ["fill", str(shifted), "--out", str(tmp_path / "fill"), "--method", "linear",
                                 "--dtype", "float32", "-q", *read])
    assert filled.exit_code == 0, filled.output
    prepared = runner.invoke(app, ["prepare", "geotiff", str(shifted), "--out", str(tmp_path / "p.h5"),
                                   "--max-cover", "1", "--max-nodata", "1", "--min-frames", "1", "-q", *read])
    assert prepared.exit_code == 0, prepared.output
    with DatasetFile(tmp_path / "p.h5") as data:
        series = data.read(data.names[0]).series
    expl = explain_scenes(load_model(DEFAULT_WEIGHTS), shifted, chip_size=64, chip=0,
                          read=ReadOptions(offset=-0.1, screen=False))

    # The truth: the original sample decoded without an offset.
    cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"], ReadOptions(screen=False))
    truth, observed = read_rows(cube, 0, cube.grid.height)
    assert len(series.dates) == len(cube.dates) == 12
    out = np.stack([rasterio.open(p).read() for p in sorted((tmp_path / "fill").glob("*_filled.tif"))])
    seen = np.broadcast_to(observed[:, None], truth.shape)
    np.testing.assert_allclose(out[seen], truth[seen], atol=2e-6)  # fill keeps observed pixels as decoded
    np.testing.assert_allclose(series.frames[seen], truth[seen], atol=2e-6)
    y0, x0 = expl.origin
    chip = (Ellipsis, slice(y0, y0 + 64), slice(x0, x0 + 64))
    assert (expl.observed == observed[chip]).all()
    np.testing.assert_allclose(expl.inputs[seen[chip]], truth[chip][seen[chip]], atol=2e-6)
    # Without the offset every command sees 0.1 more reflectance: the test can tell.
    plain = explain_scenes(load_model(DEFAULT_WEIGHTS), shifted, chip_size=64, chip=0)
    assert np.nanmean(plain.inputs - expl.inputs) == pytest.approx(0.1, abs=1e-4)


def test_scale_and_nodata_options_decode_as_documented(tmp_path):
    cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"])
    truth, observed = read_rows(cube, 0, cube.grid.height)
    halved = _rewritten(SAMPLE, tmp_path / "halved", lambda dn: dn // 2 * 2 // 2)  # even DN halved exactly
    exact = _rewritten(SAMPLE, tmp_path / "even", lambda dn: dn // 2 * 2)
    even = open_folder(exact, ["B2", "B3", "B4", "B8"])
    reference, seen = read_rows(even, 0, even.grid.height)
    scaled = open_folder(halved, ["B2", "B3", "B4", "B8"], ReadOptions(scale=2e-4))
    values, seen2 = read_rows(scaled, 0, scaled.grid.height)
    assert np.array_equal(seen, seen2)
    np.testing.assert_allclose(values[~np.isnan(values)], reference[~np.isnan(reference)], atol=1e-7)
    # no data written as 65535 without a nodata tag: found only when --nodata says so
    flagged = _rewritten(SAMPLE, tmp_path / "nd", lambda dn: np.where(dn == 0, 65535, dn))
    plain = open_folder(flagged, ["B2", "B3", "B4", "B8"])
    told = open_folder(flagged, ["B2", "B3", "B4", "B8"], ReadOptions(nodata=65535))
    assert np.array_equal(read_rows(told, 0, told.grid.height)[1], observed)
    assert read_rows(plain, 0, plain.grid.height)[1].sum() > observed.sum()  # 6.5535 "reflectance" counted as data


def test_a_pixel_without_data_in_any_one_band_is_no_data_in_all(tmp_path):
    cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"])
    _, observed = read_rows(cube, 0, cube.grid.height)

    def holes(dn: np.ndarray) -> np.ndarray:
        """DN 0 (nodata) in one band per block: B2 in rows 20-29, B4 in 40-49, B8 in 60-69 (columns 30-59)."""
        dn = dn.copy()
        for band, row in ((0, 20), (2, 40), (3, 60)):
            dn[band, row:row + 10, 30:60] = 0
        return dn

    holed = open_folder(_rewritten(SAMPLE, tmp_path / "holes", holes, nodata=0), ["B2", "B3", "B4", "B8"])
    values, seen = read_rows(holed, 0, holed.grid.height)
    hole = np.zeros(observed.shape[1:], bool)
    for row in (20, 40, 60):
        hole[row:row + 10, 30:60] = True
    assert observed[:, hole].any() and not seen[:, hole].any()
    assert np.isnan(values[:, :, hole]).all()  # every band, though three of the four have data there
    assert np.array_equal(seen[:, ~hole], observed[:, ~hole])


def _split_into_band_files(folder: Path) -> None:
    """The sample as one single-band GeoTIFF per band and date (``..._B04_...``), with its mask files."""
    for scene in SAMPLE.glob("*_T34VCL.tif"):
        with rasterio.open(scene) as src:
            profile = {**src.profile, "count": 1}
            for i, name in enumerate(("B02", "B03", "B04", "B08"), start=1):
                with rasterio.open(folder / f"{scene.stem}_{name}.tif", "w", **profile) as dst:
                    dst.write(src.read(i), 1)
        shutil.copy(scene.with_name(scene.stem + "_mask.tif"), folder)


@pytest.mark.parametrize("layout", ["multi-band files", "a file per band"])
def test_windows_read_from_the_files_equal_the_windows_read_through_dask(tmp_path, layout):
    """The direct window reader (bands that share a file in one read, dates on threads) gives the raw values
    and the decoded classes of the dask cube, for windows inside the raster and at its edges."""
    import dataclasses

    from utilise_cli.cube import read_classes

    folder = SAMPLE
    if layout == "a file per band":
        folder = tmp_path
        _split_into_band_files(folder)
    cube = open_folder(folder, ["B2", "B3", "B4", "B8"], ReadOptions())
    assert cube.windows is not None
    through_dask = dataclasses.replace(cube, windows=None)
    for y0, y1, x0, x1 in ((0, cube.grid.height, 0, cube.grid.width), (30, 90, 40, 100), (120, 165, 0, 30)):
        raw = cube.windows.read((y0, y1), (x0, x1), (y0, y1), (x0, x1))
        assert np.array_equal(raw[0], cube.reflectance[:, :, y0:y1, x0:x1].values)
        assert np.array_equal(raw[1], cube.mask[:, y0:y1, x0:x1].values)
        for a, b in zip(read_classes(cube, y0, y1, x0, x1), read_classes(through_dask, y0, y1, x0, x1)):
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.mark.parametrize("threads", [1, 4])
def test_every_date_decodes_as_its_files_say_on_any_number_of_threads(threads):
    """Dates are decoded in ranges on threads: each range, the last date of each included, decodes like the
    raw files read here (DN x 1e-4, NaN where a band is 0, occluded where the mask is not 0)."""
    from utilise_cli.cores import set_threads
    from utilise_cli.cube import read_classes

    cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"], ReadOptions(screen=False, mask_buffer=0))
    set_threads(threads)
    try:
        reflectance, occluded, nodata, _ = read_classes(cube, 0, cube.grid.height)
    finally:
        set_threads(0)
    assert len(cube.scenes) == 12 and nodata.any()
    for t, scene in enumerate(cube.scenes):
        with rasterio.open(scene.path) as src, rasterio.open(scene.mask.path) as msk:
            raw, mask = src.read(), msk.read(1)
        empty = (raw == 0).any(axis=0)
        assert np.array_equal(nodata[t], empty), t
        expected = np.where(empty, np.nan, raw * np.float32(1e-4)).astype(np.float32)
        assert np.array_equal(reflectance[t], expected, equal_nan=True), t
        assert np.array_equal(occluded[t], mask != 0), t


def test_a_window_decodes_like_the_same_pixels_of_the_whole_raster():
    """Mask buffer and cloud screen look at neighbours: a window read with its margin gives the pixels of the full
    read, bit for bit (self-validation and explain read single chips this way)."""
    from utilise_cli.cube import read_stripe

    for read in (ReadOptions(), ReadOptions(screen=False, mask_buffer=2)):
        cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"], read)
        whole = read_stripe(cube, 0, cube.grid.height)
        assert whole[2].sum() > 1000 if read.screen else not whole[2].any()
        for y0, y1, x0, x1 in ((30, 90, 40, 100), (0, 50, 100, 149), (120, 165, 0, 30)):
            part = read_stripe(cube, y0, y1, x0, x1)
            for a, b in zip(part, whole):
                assert np.array_equal(a, b[..., y0:y1, x0:x1], equal_nan=a.dtype.kind == "f")


def _band_file(path: Path, data: np.ndarray, overviews: bool = False) -> Path:
    """A one-band uint16 GeoTIFF in 256-px tiles (nodata 0), with 2x and 4x overviews if asked."""
    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype="uint16", nodata=0,
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate", crs="EPSG:32634",
                   transform=rasterio.transform.from_origin(300000, 6500000, 10, 10))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        if overviews:
            dst.build_overviews([2, 4])
    return path


def test_decoding_samples_spots_of_a_band_without_overviews_and_all_of_it_where_they_miss_the_data(tmp_path):
    rows = np.arange(1024, dtype=np.uint16)[:, None] + np.zeros(1024, np.uint16)
    with rasterio.open(_band_file(tmp_path / "plain.tif", 1000 + rows)) as src:
        spots = sample_values(src, 1, 0)
    # 3 x 3 spots of 64 px, each in the middle of the 256-px tile that holds a point of the grid (rows 170, 512
    # and 853): rows 96-159, 608-671 and 864-927, three spots each
    assert spots.size == SAMPLE_SPOTS ** 2 * SAMPLE_PX ** 2
    assert sorted(set(spots.tolist())) == [1000 + r for a in (96, 608, 864) for r in range(a, a + 64)]
    with rasterio.open(_band_file(tmp_path / "overviews.tif", 1000 + rows, overviews=True)) as src:
        assert sample_values(src, 1, 0).size == 128 * 128  # a decimated read, from the overviews
    with rasterio.open(_band_file(tmp_path / "thin.tif", 1000 + rows[:40])) as src:  # rasters thinner than a spot
        assert sample_values(src, 1, 0).size == SAMPLE_SPOTS ** 2 * SAMPLE_PX * 40
    # A scene that covers only a corner of its tile: the spots miss it, the decoding check must not.
    corner = np.zeros((1024, 1024), np.uint16)
    corner[:64, :64] = 30000  # reflectance 3.0 with the usual scale: not reflectance
    with rasterio.open(_band_file(tmp_path / "corner.tif", corner)) as src:
        found = sample_values(src, 1, 0)
    assert found.size > 0 and set(found.tolist()) == {30000}
    folder = tmp_path / "corner"
    folder.mkdir()
    _band_file(folder / "20210403_B2.tif", corner)
    result = runner.invoke(app, ["fill", str(folder), "--out", str(tmp_path / "out"), "--bands", "B2",
                                 "--mask-kind", "none", "--method", "linear", "--dry-run"])
    assert result.exit_code == 2 and "median reflectance is 3" in result.output, result.output
