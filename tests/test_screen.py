"""The multi-temporal cloud screen on real scenes: it removes the remnants around the sample's masks, makes masks
where there are none, and leaves clear frames of a training-policy series alone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from utilise_cli.cli import app
from utilise_cli.cube import open_folder, read_classes, read_stripe
from utilise_cli.options import ReadOptions
from utilise_cli.cores import set_threads
from utilise_cli.screen import rim_count, screen
from utilise_cli.sentinel2 import band_key

from .conftest import ROOT, read_outputs, shared_path

SAMPLE = ROOT / "sample_data"
runner = CliRunner()


def _flags(out) -> np.ndarray:
    outputs = read_outputs(out)
    return np.stack([outputs[n][0] for n in sorted(outputs) if n.endswith("_flags.tif")])


def _rims_and_filled(out) -> tuple[int, float]:
    """The rim count of a fill of the sample (against its input masks) and the share of pixel-dates filled."""
    cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"], ReadOptions(screen=False, mask_buffer=0))  # the masks as given
    occluded = read_classes(cube, 0, cube.grid.height)[1]
    outputs = read_outputs(out)
    names = sorted(n for n in outputs if not n.endswith("_flags.tif"))
    blue = np.stack([np.where(outputs[n][0] == 0, np.nan, outputs[n][0] * 1e-4) for n in names])
    flags = np.stack([outputs[n.replace(".tif", "_flags.tif")][0] for n in names])
    return rim_count(blue, occluded), float(((flags == 1) | (flags == 2)).mean())


def test_the_defaults_remove_most_cloud_remnants_around_the_masks(tmp_path):
    """Defaults (1 px mask buffer and the screen) against the masks as given."""
    runs = {}
    for name, args in (("plain", ["--no-screen", "--mask-buffer", "0"]), ("defaults", [])):
        result = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(tmp_path / name), "--method", "adjusted",
                                     "-q", *args])
        assert result.exit_code == 0, result.output
        runs[name] = _rims_and_filled(tmp_path / name)
    (plain_rims, plain_filled), (rims, filled) = runs["plain"], runs["defaults"]
    # the bounds; measured: 3110 -> 150 rims, 3.3 % -> 6.1 % of pixel-dates (1.85x)
    assert rims <= min(300, 0.2 * plain_rims)
    assert plain_filled < filled <= 2 * plain_filled


def test_pixels_only_the_screen_found_have_their_own_flag(tmp_path):
    """Flag 2 marks exactly what the screen added to the given masks (read back from the COG sidecars);
    without the screen no pixel has it."""
    for args in (["--no-screen"], []):
        out = tmp_path / str(len(args))
        result = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(out), "--method", "linear", "-q", *args])
        assert result.exit_code == 0, result.output
        flags = _flags(out)
        cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"], ReadOptions(screen=not args))
        _, occluded, nodata, screened = read_classes(cube, 0, cube.grid.height)
        never = (nodata | occluded).all(axis=0)
        assert np.array_equal(flags == 2, screened & ~nodata & ~never)
        assert np.array_equal(flags == 1, (occluded | nodata) & ~screened & ~never)  # no data is filled too
    assert screened.sum() > 1000  # the sample has thin cloud and rims the masks miss


def test_scenes_without_masks_are_filled_with_a_warning_and_few_remnants(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for scene in SAMPLE.glob("*_T34VCL.tif"):
        shutil.copy(scene, folder)
    result = runner.invoke(app, ["fill", str(folder), "--out", str(tmp_path / "out"), "--method", "adjusted"])
    assert result.exit_code == 0, result.output
    assert "no cloud masks" in result.output and "cloud screen" in result.output
    masked = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(tmp_path / "masked"), "--method", "adjusted",
                                 "-q"])  # the masks, with the defaults
    assert masked.exit_code == 0
    rims, filled = _rims_and_filled(tmp_path / "out")
    # measured: 221 vs 150; 992 before the screen looked for rims around its own clouds, 776 before the
    # rim rule took transient reddish brightenings
    assert filled > 0.005 and rims <= 2 * _rims_and_filled(tmp_path / "masked")[0]


def test_a_brightening_next_to_a_mask_is_a_rim_when_it_comes_and_goes_and_soil_when_it_stays():
    """Next to a masked cloud, a brightening that is redder than cloud (red +0.08, blue +0.05) is screened on
    the one date it appears, and left alone where it lasts over the clear dates around it (bare soil)."""
    dates, size = 7, 24
    refl = np.empty((dates, 4, size, size), np.float32)
    refl[:, :3], refl[:, 3] = 0.04, 0.30  # B2, B3, B4 dark; B8 a green field
    given = np.zeros((dates, size, size), bool)
    given[3, 8:14, 8:14] = True  # a cloud on date 3
    rim = (slice(8, 14), slice(14, 16))  # 2 columns right of the cloud
    refl[3, 0][rim] += 0.05  # a rim: date 3 only
    refl[3, 2][rim] += 0.08
    soil = (slice(8, 14), slice(6, 8))  # 2 columns left of the cloud, bright on dates 2, 3 and 4
    refl[2:5, 0][:, soil[0], soil[1]] += 0.05
    refl[2:5, 2][:, soil[0], soil[1]] += 0.08
    flagged = screen(refl, given, ["B2", "B3", "B4", "B8"])
    assert flagged[3][rim].all()
    assert not flagged[:, soil[0], soil[1]].any()
    assert flagged.sum() == flagged[3][rim].size


def test_a_nir_darkening_next_to_a_cloud_is_a_shadow_when_it_comes_and_goes_and_land_when_it_stays():
    """Next to a masked cloud, NIR 0.12 darker than the pixel's median is screened as shadow on the one date it
    appears, and left alone where it stays dark on the clear dates after it (a harvest): both are darker than
    the median over the dates, only the shadow is darker than its clear neighbours in time too."""
    dates, size = 7, 32
    refl = np.empty((dates, 4, size, size), np.float32)
    refl[:, :3], refl[:, 3] = 0.04, 0.30  # B2, B3, B4 dark; B8 a green field
    given = np.zeros((dates, size, size), bool)
    given[4, 8:14, 8:14] = True  # a cloud on date 4
    shadow = (slice(16, 20), slice(8, 14))  # below the cloud, date 4 only
    refl[4, 3][shadow] -= 0.12
    refl[4, 0][shadow] -= 0.01
    harvest = (slice(8, 14), slice(18, 24))  # right of the cloud, dark from date 4 on (3 of 7 dates)
    refl[4:, 3][:, harvest[0], harvest[1]] -= 0.15
    flagged = screen(refl, given, ["B2", "B3", "B4", "B8"])
    assert flagged[4][shadow].all()
    assert not flagged[:, harvest[0], harvest[1]].any()
    assert flagged.sum() == flagged[4][shadow].size


def test_the_screen_leaves_clear_frames_alone_and_finds_scl_clouds():
    """WorldCereal (training policy) with its SCL hidden: frames SCL calls clear are left alone (< 2 % of
    pixels flagged), and most SCL cloud on partly cloudy frames is found."""
    from utilise_cli.datasets.series import CLEAR, OCCLUDED
    from utilise_cli.datasets.sources import read_worldcereal

    series = read_worldcereal(shared_path("data", "worldcereal", "00002806639B424A"))[0]
    valid = series.cloud_mask != 2
    refl = np.where(valid[:, None], series.frames, np.nan).astype(np.float32)
    flagged = screen(refl, None, [band_key(b) for b in series.bands]) & valid
    occluded = series.cloud_mask == OCCLUDED
    clear = (series.cloud_mask == CLEAR).sum(axis=(1, 2)) == valid.sum(axis=(1, 2))
    share = occluded.sum(axis=(1, 2)) / np.maximum(valid.sum(axis=(1, 2)), 1)
    partly = (share >= 0.05) & (share <= 0.9)
    assert clear.sum() >= 5 and partly.sum() >= 5
    assert flagged[clear].mean() < 0.02
    assert (flagged & occluded)[partly].sum() / occluded[partly].sum() > 0.6


def test_the_screen_agrees_with_a_deep_learning_cloud_mask_that_finds_the_clouds_scl_misses():
    """The HU/RO minicube (training policy), no masks given: against the cube's own cloud mask (GreenEarthNet's
    s2_dlmask, made without SCL), nearly all of the screen's pixels are cloud or shadow and it finds most of the
    mask's cloud on partly cloudy frames, where SCL finds about half of it. A screen that flagged more land, or
    one that missed thin cloud, would fail; so would SCL standing in for the screen."""
    import xarray as xr

    ds = xr.open_dataset(shared_path("data", "greenearthnet", "minicubes",
                                     "MJJ2021_replicated_minicube_225_34TET_47.37_22.05.nc"))
    acquired = np.isfinite(ds["s2_SCL"].values).any(axis=(1, 2))
    refl = np.stack([ds[b].values[acquired] for b in ("s2_B02", "s2_B03", "s2_B04", "s2_B8A")], axis=1)
    scl, dlmask = ds["s2_SCL"].values[acquired], ds["s2_dlmask"].values[acquired]
    valid = np.isfinite(refl).all(axis=1) & np.isfinite(scl) & ~np.isin(scl, (0, 1))
    flagged = screen(np.where(valid[:, None], refl, np.nan).astype(np.float32), None, ["B2", "B3", "B4", "B8"])
    cloud, occluded = np.isin(dlmask, (1, 2)) & valid, np.isin(dlmask, (1, 2, 3)) & valid
    share = cloud.sum(axis=(1, 2)) / np.maximum(valid.sum(axis=(1, 2)), 1)
    partly, clear = (share >= 0.05) & (share <= 0.9), (occluded.sum(axis=(1, 2)) == 0) & valid.any(axis=(1, 2))
    assert partly.sum() >= 5 and clear.sum() >= 5
    assert (flagged & valid)[clear].sum() / valid[clear].sum() < 0.005
    flagged, cloud, occluded, scl = flagged[partly] & valid[partly], cloud[partly], occluded[partly], scl[partly]
    # 0.985 and 0.84 here; with a blue threshold of 0.015 instead of 0.04, 0.951 and 0.86
    assert (flagged & occluded).sum() / flagged.sum() > 0.96
    assert (flagged & cloud).sum() / cloud.sum() > 0.75 > (np.isin(scl, (3, 8, 9, 10)) & cloud).sum() / cloud.sum()


def test_the_preview_is_readable_and_shows_what_the_screen_added(tmp_path):
    """preview.png: a grid of input | filled panels at least 400 px wide each (12 dates, 3 per row), given
    masks in magenta and the screen's additions in cyan."""
    from PIL import Image

    from utilise_cli.pictures import OCCLUDED_RGB, PREVIEW_COLUMNS, SCREENED_RGB

    result = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(tmp_path), "--method", "linear", "--screen",
                                 "--preview", "-q"])
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(tmp_path / "preview.png").convert("RGB"))
    assert image.shape[1] >= 2 * PREVIEW_COLUMNS * 400 and image.shape[0] >= 4 * 400 * 165 / 149
    for colour in (OCCLUDED_RGB, SCREENED_RGB):
        pixels = (np.abs(image.astype(int) - np.multiply(colour, 255).astype(int)).sum(axis=-1) < 10).sum()
        assert pixels > 10_000, colour


@pytest.mark.parametrize("threads", [1, 3])
def test_the_screen_in_column_blocks_equals_the_screen_in_one_piece(threads):
    """The screen is local: in blocks of 40 columns (with their margins), screened one after another or on
    threads, it flags exactly what it flags on the whole sample, which is what lets it run in bounded memory on
    wide rasters and on every core."""
    cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"], ReadOptions(screen=False, mask_buffer=0))
    reflectance, occluded, nodata, _ = read_classes(cube, 0, cube.grid.height)
    reflectance[np.broadcast_to(nodata[:, None], reflectance.shape)] = np.nan
    whole = screen(reflectance, occluded, cube.bands, block=10_000)
    assert whole.sum() > 1000
    set_threads(threads)
    try:
        assert np.array_equal(screen(reflectance, occluded, cube.bands, block=40), whole)
        assert np.array_equal(screen(reflectance, None, cube.bands, block=40), screen(reflectance, None, cube.bands))
    finally:
        set_threads(0)


@pytest.mark.parametrize("masks", [False, True])
def test_the_screen_s_margin_covers_its_longest_chain(tmp_path, masks):
    """Without masks a shadow's cloud can be a rim next to a patch pixel that is in a patch only through a dense
    box further on: the verdict on the shadow depends on a pixel 21 px away. With masks (here: given, all clear) a
    rim lies next to the mask, and the longest chain is a shadow 12 px from the patch pixel: 18 px. Cut into column
    pieces of any width, the screen must flag what it flags in one piece, and a window of rows read from the files
    what the whole raster read gives (with margins of 19 and 17 px, pieces and windows ending at the shadow lost
    it)."""
    t, h, w, a = 10, 12, 64, 30  # a: the patch pixel; the dense box is centred at a + 3 and reaches a + 6
    blue, red, nir = np.full((t, h, w), 0.05, np.float32), np.full((t, h, w), 0.05, np.float32), \
        np.full((t, h, w), 0.3, np.float32)
    event = 5
    for column in (a, a + 4, a + 5, a + 6):  # brighter in blue and red: the box at a + 3 alone is dense (4 of 7)
        blue[event, :, column], red[event, :, column] = 0.3, 0.3
    if masks:
        shadow = a - 12  # a shadow candidate 12 px from the patch pixel, 18 px from the box's far edge
    else:
        blue[event, :, a - 3] = 0.085  # a rim: a weak blue brightening within 3 px of the patch pixel at a
        shadow = a - 15  # 12 px from the rim, 21 px from the box's far edge
    nir[event, :, shadow] = 0.15
    reflectance = np.stack([blue, blue, red, nir], axis=1)
    bands = ["B2", "B3", "B4", "B8"]
    given = np.zeros((t, h, w), bool) if masks else None
    whole = screen(reflectance, given, bands, block=10_000)
    assert whole[event, :, shadow].all() and whole[event, :, a].all()
    assert whole.sum() == whole[event].sum()  # the clear dates are left alone
    set_threads(1)
    try:
        for block in range(1, w + 1):
            assert np.array_equal(screen(reflectance, given, bands, block=block), whole), block
    finally:
        set_threads(0)
    # The same series with the chain along the rows, as float32 GeoTIFFs (with mask files where masks are given).
    profile = dict(driver="GTiff", width=h, height=w, count=4, dtype="float32", crs="EPSG:32634",
                   transform=rasterio.transform.from_origin(500_000, 6_500_000, 10, 10))
    for i in range(t):
        scene = tmp_path / f"202105{i + 1:02d}_S2_T34VCL.tif"
        with rasterio.open(scene, "w", **profile) as dst:
            dst.write(reflectance[i].swapaxes(-1, -2))
            for band, name in enumerate(bands, start=1):
                dst.set_band_description(band, name)
        if masks:
            with rasterio.open(scene.with_name(scene.stem + "_mask.tif"), "w", **{**profile, "count": 1,
                                                                                   "dtype": "uint8"}) as dst:
                dst.write(np.zeros((1, w, h), np.uint8))
    cube = open_folder(tmp_path, bands, ReadOptions(mask_buffer=0))
    assert cube.has_masks == masks
    screened = read_stripe(cube, 0, w)[2]
    assert np.array_equal(screened, whole.swapaxes(-1, -2))
    for y in range(1, w):
        assert np.array_equal(read_stripe(cube, 0, y)[2], screened[:, :y]), y
        assert np.array_equal(read_stripe(cube, y, w)[2], screened[:, y:]), y


def test_the_screen_while_decoding_equals_the_screen_of_the_decoded_sample():
    """Decoding hands the screen its own nodata classes instead of letting it look for NaN: on the sample (a
    nodata border of about 9 %) the screen run while decoding flags exactly what it flags on the decoded bands."""
    plain = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"], ReadOptions(screen=False))
    reflectance, occluded, nodata, _ = read_classes(plain, 0, plain.grid.height)
    assert 0.05 < nodata.mean() < 0.5
    screened = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"], ReadOptions(screen=True))
    _, _, _, found = read_classes(screened, 0, screened.grid.height)
    expected = screen(reflectance, occluded, plain.bands)
    assert expected.sum() > 1000
    assert np.array_equal(found, expected)


@pytest.mark.filterwarnings("ignore:All-NaN slice")  # numpy's own quantile where no date is usable
def test_the_screen_s_sort_and_grow_equal_numpy_s_and_scipy_s_on_the_sample():
    import itertools

    from scipy.ndimage import maximum_filter, uniform_filter

    from utilise_cli.screen import _box_count, _comparators, _quantile_over_dates, grow

    # A network that sorts every 0/1 sequence sorts every sequence (Knuth's 0-1 principle); likewise one that puts
    # the `keep` smallest first, in order.
    for n in range(1, 12):
        for keep in (None, 1, n // 4 + 2):
            for bits in itertools.product((0, 1), repeat=n):
                ordered = list(bits)
                for a, b in _comparators(n, keep):
                    ordered[a], ordered[b] = min(ordered[a], ordered[b]), max(ordered[a], ordered[b])
                assert ordered[:keep] == sorted(bits)[:keep], (n, keep, bits)
    cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"])
    reflectance, usable, _ = read_stripe(cube, 0, cube.grid.height)  # usable: observed (clear, with data)
    blue = reflectance[:, 0]
    for q in (0.25, 0.5):
        expected = np.nanquantile(np.where(usable, blue, np.nan), q, axis=0)
        expected[usable.sum(axis=0) < 3] = np.nan
        assert np.allclose(_quantile_over_dates(blue, usable, q), expected, equal_nan=True, atol=1e-7)
    for px in (1, 3):
        window = np.rint(uniform_filter((~usable).astype(float), size=(1, 2 * px + 1, 2 * px + 1), mode="constant")
                         * (2 * px + 1) ** 2)
        assert np.array_equal(_box_count(~usable, px), window)
    for px in (1, 3, 12):
        assert np.array_equal(grow(~usable, px), maximum_filter(~usable, size=(1, 2 * px + 1, 2 * px + 1),
                                                                 mode="constant"))
