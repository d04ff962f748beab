"""Finding scenes, bands and masks in a folder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import rasterio
from typer.testing import CliRunner

from utilise_cli.cli import app
from utilise_cli.scenes import discover_scenes
from utilise_cli.sentinel2 import band_key

from .conftest import ROOT, fills_as_the_sample, one_line_error, read_outputs, shared_path

SAMPLE = ROOT / "sample_data"


def test_band_names():
    assert [band_key(b) for b in ["B02", "b2", "S2-L2A-B02", "s2_B8A", "SCL"]] == ["B2", "B2", "B2", "B8A", "SCL"]
    # STAC common names, as some exports describe their bands
    assert [band_key(b) for b in ["blue", "Green", "RED", "nir", "nir08", "swir16", "QA60"]] == \
        ["B2", "B3", "B4", "B8", "B8A", "B11", "QA60"]


def test_scenes_whose_bands_are_described_by_common_names_are_read_as_their_sentinel_2_bands(tmp_path):
    """Band descriptions blue, green, red, nir: found as B2, B3, B4, B8 (the shipped network's bands), so the fill
    that stopped with "has no band B2, B3, B4, B8" runs, and equals the sample's."""

    folder = tmp_path / "common"
    folder.mkdir()
    for path in SAMPLE.glob("*.tif"):
        with rasterio.open(path) as src:
            profile, data, names = src.profile, src.read(), src.descriptions
        with rasterio.open(folder / path.name, "w", **profile) as dst:
            dst.write(data)
            dst.descriptions = ("blue", "green", "red", "nir") if len(names) == 4 else names
    scenes = discover_scenes(folder)
    assert [s.bands["B8"].index for s in scenes] == [4] * 12
    fills_as_the_sample(folder, tmp_path)


def test_discovers_sweden_scenes_with_scl_band_inside():
    folder = shared_path("data", "greenearthnet", "geotiff_sweden_T34VCL")
    scenes = discover_scenes(folder)
    assert len(scenes) == 12 and scenes[0].date == dt.date(2021, 4, 3)
    assert all(s.mask_kind == "scl" and list(s.bands) == ["B2", "B3", "B4", "B8"] for s in scenes)
    assert scenes[0].bands["B8"].index == 8  # B1 B2 ... B8 in the file's band descriptions


def test_an_unreadable_scene_is_named_once_with_gdal_s_reason(tmp_path):
    """GDAL's message quotes the file it could not open; the error names it once, and keeps GDAL's reason whole
    however long the path."""
    import pytest

    from utilise_cli.errors import SceneError

    folder = tmp_path / ("a_long_folder_name_" * 4)
    folder.mkdir()
    scene = folder / "20210403_scene.tif"
    scene.write_bytes(b"not a GeoTIFF" * 100)
    with pytest.raises(SceneError) as caught:
        discover_scenes(folder)
    message = str(caught.value)
    assert message.count(str(scene)) == 1
    assert "(not recognized as being in a supported file format)" in message


def _safe_products(root: Path, raw_from: int = 99, dates: int = 4) -> Path:
    """The sample's first dates as unzipped L2A SAFE products, laid out as ESA ships them: R10m (B02, B03, B04,
    B08 and the aerosol, water-vapour and true-colour layers), R20m (the bands again at 20 m, B8A, SCL) and R60m
    (SCL again). Products from index ``raw_from`` on are baseline 04.00 with raw DN (+1000), the rest 03.00."""
    from affine import Affine

    root.mkdir()
    for n, scene in enumerate(sorted(SAMPLE.glob("*_T34VCL.tif"))[:dates]):
        date, raw = scene.name[:8], n >= raw_from
        with rasterio.open(scene) as src, rasterio.open(scene.with_name(scene.stem + "_mask.tif")) as msk:
            bands = {f"B0{k}": np.where(b > 0, b + (1000 if raw else 0), 0).astype(np.uint16)
                     for k, b in zip((2, 3, 4, 8), src.read())}
            scl = np.where(msk.read(1) > 0, 9, 4).astype(np.uint8)
            crs, t = src.crs, src.transform
        product = root / f"S2B_MSIL2A_{date}T100019_N{'0400' if raw else '0300'}_R122_T34VCL_{date}T121000.SAFE"
        img = product / "GRANULE" / f"L2A_T34VCL_A021000_{date}T100019" / "IMG_DATA"
        layers = {"R10m": {**bands, "AOT": bands["B02"], "WVP": bands["B03"], "TCI": (bands["B04"] // 40)},
                  "R20m": {"B02": bands["B02"], "B8A": bands["B08"], "SCL": scl, "AOT": bands["B02"]},
                  "R60m": {"SCL": scl}}
        for folder, files in layers.items():
            step = {"R10m": 1, "R20m": 2, "R60m": 6}[folder]
            (img / folder).mkdir(parents=True)
            for name, values in files.items():
                values = values[::step, ::step]
                with rasterio.open(img / folder / f"T34VCL_{date}T100019_{name}_{folder[1:]}.jp2", "w",
                                   driver="JP2OpenJPEG", width=values.shape[1], height=values.shape[0], count=1,
                                   dtype=values.dtype, crs=crs, transform=t @ Affine.scale(step),
                                   QUALITY=100, REVERSIBLE="YES") as dst:
                    dst.write(values[None])
    return root


def test_sentinel2_safe_products_are_read_as_shipped_each_with_its_baseline_s_offset(tmp_path):
    """A folder of unzipped L2A products: the 10 m bands (not the 20 m copies, not the aerosol or true-colour
    layers), the 20 m SCL put on their grid, and raw DN of baseline 04.00 products read with -0.1, so a series
    across that baseline fills as the same series all harmonised does."""
    from utilise_cli.fill import fill
    from utilise_cli.options import ReadOptions
    from utilise_cli.plan import FillOptions

    mixed, plain = _safe_products(tmp_path / "mixed", raw_from=2), _safe_products(tmp_path / "plain")
    scenes = discover_scenes(mixed)
    assert [s.offset for s in scenes] == [0.0, 0.0, -0.1, -0.1]
    assert all(s.bands[b].path.name.endswith(f"_B0{b[1]}_10m.jp2") for s in scenes for b in s.bands)
    assert all(s.mask.path.name.endswith("_SCL_20m.jp2") and s.mask_kind == "scl" for s in scenes)
    assert scenes[2].product.startswith("S2B_MSIL2A_20210501T100019_N0400")
    dry = CliRunner().invoke(app, ["fill", str(mixed), "--out", str(tmp_path / "dry"), "--dry-run", "-q"])
    assert dry.exit_code == 0 and scenes[2].product in dry.output, dry.output
    assert ("value x 0.0001 + 0 on 2 dates (2021-04-03..2021-04-18); value x 0.0001 - 0.1 on 2 dates "
            "(2021-05-01..2021-05-13)") in dry.output
    # The screen off: its thresholds would turn float rounding of the two decodings into a few flipped pixels.
    options = FillOptions(method="linear", dtype="float32", read=ReadOptions(screen=False))
    assert len(fill(mixed, tmp_path / "out_mixed", options).outputs) == 4
    fill(plain, tmp_path / "out_plain", options)
    got, want = read_outputs(tmp_path / "out_mixed"), read_outputs(tmp_path / "out_plain")
    assert len(got) == 8 and got.keys() == want.keys()
    for name in got:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)
    with rasterio.open(tmp_path / "out_mixed" / "20210501_filled.tif") as src:
        assert src.res == (20.0, 20.0)  # the 10 m bands' grid (the sample's pixels are 20 m)


def test_a_zipped_safe_product_two_tiles_or_one_product_alone_are_named_with_the_fix(tmp_path):

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "S2A_MSIL2A_20220612T100031_N0400_R122_T34VCL_20220612T161010.zip").write_bytes(b"PK")
    result = CliRunner().invoke(app, ["fill", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "-q"])
    one_line_error(result, "S2A_MSIL2A_20220612T100031_N0400_R122_T34VCL_20220612T161010.zip", "unzip")
    assert not (tmp_path / "out").exists()
    (tmp_path / "in" / "S2A_MSIL2A_20220612T100031_N0400_R122_T34VCL_20220612T161010.zip").unlink()
    for tile in ("T34VCL", "T34VCK"):  # an area across two tiles, downloaded into one folder
        (tmp_path / "in" / f"S2A_MSIL2A_20220612T100031_N0400_R122_{tile}_20220612T161010.SAFE").mkdir()
    result = CliRunner().invoke(app, ["fill", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "-q"])
    one_line_error(result, "2 tiles (T34VCK, T34VCL)", "folder of its own")
    product = next((tmp_path / "in").iterdir())  # one product given instead of the folder of them
    result = CliRunner().invoke(app, ["fill", str(product), "--out", str(tmp_path / "out"), "-q"])
    one_line_error(result, product.name, "one SAFE product (one date)", "the products of every date")


def test_hls_scenes_with_their_fmask_fill_as_the_same_bands_and_masks_do(tmp_path):
    """HLS v2 (S30) granules: one int16 file per band (nodata -9999), day-of-year dates, and a bit-packed Fmask in
    which nearly every pixel has an aerosol bit set. Read as binary, every pixel was occluded; read as Fmask
    (its name says so) only cirrus, cloud, adjacent and shadow are, so the fill equals the sample's with the same
    clouds."""

    folder = tmp_path / "hls"
    folder.mkdir()
    for scene in sorted(SAMPLE.glob("*_T34VCL.tif")):
        when = dt.datetime.strptime(scene.name[:8], "%Y%m%d")
        stem = f"HLS.S30.T34VCL.{when:%Y%j}T100021.v2.0"
        with rasterio.open(scene) as src, rasterio.open(scene.with_name(scene.stem + "_mask.tif")) as msk:
            profile, data, clouds = src.profile, src.read(), msk.read(1) > 0
        for values, band in zip(data, ("B02", "B03", "B04", "B08")):
            with rasterio.open(folder / f"{stem}.{band}.tif", "w", **{**profile, "count": 1, "dtype": "int16",
                                                                      "nodata": -9999}) as dst:
                dst.write(np.where(values == 0, -9999, values).astype(np.int16)[None])
        fmask = np.full(clouds.shape, 0b01000000, np.uint8)  # aerosol level low
        fmask[clouds] |= 0b10  # cloud
        fmask[:, :20] |= 0b100000  # water: not occluded
        fmask[5:9, 5:9] |= 0b10000  # snow: not occluded
        fmask[data[0] == 0] = 255  # fill
        with rasterio.open(folder / f"{stem}.Fmask.tif", "w", **{**profile, "count": 1, "dtype": "uint8",
                                                                 "nodata": 255}) as dst:
            dst.write(fmask[None])
    scenes = discover_scenes(folder)
    assert len(scenes) == 12 and scenes[2].date == dt.date(2021, 5, 1) and scenes[0].mask_kind == "fmask"
    fills_as_the_sample(folder, tmp_path)
    # told the masks are binary, nothing is observed, and the error names the kind they look like
    result = CliRunner().invoke(app, ["fill", str(folder), "--out", str(tmp_path / "binary"), "--mask-kind",
                                      "binary", "--method", "linear", "-q"])
    one_line_error(result, "no pixel of any date is observed", "--mask-kind fmask")


def test_earth_engine_exports_with_a_qa60_band_use_it_as_their_mask(tmp_path):
    """Earth Engine's S2 exports often carry QA60 (bit 10 opaque cloud, 11 cirrus) and no SCL: it is found by its
    name and read as binary, so the fill equals the sample's with its mask files."""

    folder = tmp_path / "gee"
    folder.mkdir()
    for scene in sorted(SAMPLE.glob("*_T34VCL.tif")):
        with rasterio.open(scene) as src, rasterio.open(scene.with_name(scene.stem + "_mask.tif")) as msk:
            profile, data, names, clouds = src.profile, src.read(), src.descriptions, msk.read(1) > 0
        qa60 = np.where(clouds, 1 << 10, 0).astype(data.dtype)
        qa60[clouds & (np.arange(clouds.shape[1]) % 2 == 0)] = 1 << 11  # cirrus here and there
        with rasterio.open(folder / scene.name, "w", **{**profile, "count": 5}) as dst:
            dst.write(np.concatenate([data, qa60[None]]))
            dst.descriptions = (*names, "QA60")
    scenes = discover_scenes(folder)
    assert all(s.mask.index == 5 and s.mask_kind == "binary" for s in scenes)
    fills_as_the_sample(folder, tmp_path)
    # QA60 exported as a file of its own beside each scene: a mask by its name
    apart = tmp_path / "apart"
    apart.mkdir()
    for scene in sorted(SAMPLE.glob("*_T34VCL.tif")):
        (apart / scene.name).write_bytes(scene.read_bytes())
        with rasterio.open(folder / scene.name) as src:
            profile, qa60 = src.profile, src.read(5)
        with rasterio.open(apart / f"{scene.stem}_QA60.tif", "w", **{**profile, "count": 1}) as dst:
            dst.write(qa60[None])
    assert [s.mask.path.name for s in discover_scenes(apart)][:1] == ["20210403_S2_T34VCL_QA60.tif"]
    fills_as_the_sample(apart, tmp_path / "apart_out")


def test_granule_band_files_outside_their_products_are_read_with_a_warning_about_the_offset(tmp_path, caplog):
    """A granule's R10m and R20m files copied into one folder: read (the layers beside the bands skipped, the
    finer of a band's files taken), but their baseline, and so their offset, is unknown without the product: the
    log says so once and names --offset -0.1 and the .SAFE folders."""
    import logging
    import shutil

    from utilise_cli.cube import open_folder
    from utilise_cli.options import ReadOptions

    products = _safe_products(tmp_path / "products", raw_from=0, dates=2)  # baseline 04.00: raw DN
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in products.glob("*.SAFE/GRANULE/*/IMG_DATA/R*/*.jp2"):
        shutil.copy(path, flat / path.name)
    with caplog.at_level(logging.WARNING, logger="utilise_cli"):
        cube = open_folder(flat, ["B2", "B3", "B4", "B8"], ReadOptions(align=True))
    assert [Path(str(s.bands["B2"].path)).name for s in cube.scenes] == [
        "T34VCL_20210403T100019_B02_10m.jp2", "T34VCL_20210418T100019_B02_10m.jp2"]
    warned = [r.getMessage() for r in caplog.records if "outside their products" in r.getMessage()]
    assert len(warned) == 1 and "--offset -0.1" in warned[0] and ".SAFE folders" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="utilise_cli"):
        open_folder(flat, ["B2", "B3", "B4", "B8"], ReadOptions(align=True, offset=-0.1))
        open_folder(products, ["B2", "B3", "B4", "B8"])
    assert not [r for r in caplog.records if "outside their products" in r.getMessage()]


def test_masks_in_a_subfolder_or_a_folder_given_are_read_whatever_their_names(tmp_path):
    """Masks kept apart from the scenes: in a subfolder named as masks (here SCL/, files named by date alone,
    their kind told by the folder's name; a cloud_free/ subfolder is left alone), or in a folder beside the
    scenes' given with --mask-folder. Both fill as the sample does; before, the masks were not found and the
    cloud screen alone made them."""

    folder, beside = tmp_path / "scenes", tmp_path / "cloud_cover"
    (folder / "SCL").mkdir(parents=True)
    beside.mkdir()
    (folder / "cloud_free").mkdir()  # another tool's outputs, not masks
    for scene in sorted(SAMPLE.glob("*_T34VCL.tif")):
        (folder / scene.name).write_bytes(scene.read_bytes())
        (folder / "cloud_free" / f"{scene.name[:8]}.tif").write_bytes(scene.read_bytes())
        mask = scene.with_name(scene.stem + "_mask.tif")
        (beside / f"{scene.name[:8]}.tif").write_bytes(mask.read_bytes())
        with rasterio.open(mask) as src:
            profile, clouds = src.profile, src.read(1) > 0
        with rasterio.open(folder / "SCL" / f"{scene.name[:8]}.tif", "w", **profile) as dst:
            dst.write(np.where(clouds, 9, 4).astype(profile["dtype"])[None])  # cloud high, vegetation
    scenes = discover_scenes(folder)
    assert [s.mask.path.parent.name for s in scenes] == ["SCL"] * 12 and {s.mask_kind for s in scenes} == {"scl"}
    fills_as_the_sample(folder, tmp_path / "sub")
    dry = CliRunner().invoke(app, ["fill", str(folder), "--out", str(tmp_path / "o"), "--dry-run"])
    assert "mask SCL/20210403.tif (scl)" in dry.output, dry.output
    (folder / "SCL").rename(tmp_path / "SCL")  # out of the folder: --mask-folder finds the binary masks
    result = CliRunner().invoke(app, ["fill", str(folder), "--out", str(tmp_path / "beside"), "--method", "linear",
                                      "-q", "--mask-folder", str(beside)])
    assert result.exit_code == 0, result.output
    got, want = read_outputs(tmp_path / "beside"), read_outputs(tmp_path / "sub" / "sample_out")
    assert len(got) == 24 and got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    result = CliRunner().invoke(app, ["fill", str(folder), "--out", str(tmp_path / "x"), "--method", "linear", "-q",
                                      "--mask-folder", str(tmp_path / "nowhere")])
    one_line_error(result, str(tmp_path / "nowhere"), "--mask-folder")


def test_a_full_band_stack_without_descriptions_is_read_by_the_band_names_given(tmp_path):
    """12-band L2A stacks (B1..B12 without B10) exported without band descriptions: --band-names names them in
    file order and the four the network takes are picked from them, so the fill equals the sample's. Before,
    the only way was --bands with all 12 names, which the 4-band checkpoint refuses."""

    folder = tmp_path / "stack"
    folder.mkdir()
    order = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]
    for scene in sorted(SAMPLE.glob("*_T34VCL.tif")):
        mask = scene.with_name(scene.stem + "_mask.tif")
        (folder / mask.name).write_bytes(mask.read_bytes())
        with rasterio.open(scene) as src:
            profile, data = src.profile, src.read()
        by_name = dict(zip(["B2", "B3", "B4", "B8"], data))
        others = np.where(data[0] > 0, (data[0] // 2 + data[3] // 2 + 1), 0).astype(data.dtype)
        with rasterio.open(folder / scene.name, "w", **{**profile, "count": 12}) as dst:
            dst.write(np.stack([by_name.get(name, others) for name in order]))
    names = ["--band-names", ",".join(order)]
    refused = CliRunner().invoke(app, ["fill", str(folder), "--out", str(tmp_path / "x"), "--dry-run", "-q"])
    one_line_error(refused, "20210403_S2_T34VCL.tif", "12 bands without descriptions", "--band-names")
    planned = CliRunner().invoke(app, ["fill", str(folder), "--out", str(tmp_path / "x"), "--dry-run", *names])
    assert planned.exit_code == 0 and "bands     B2, B3, B4, B8" in planned.output, planned.output
    for source, out, extra in ((folder, "out", names), (SAMPLE, "sample_out", [])):
        result = CliRunner().invoke(app, ["fill", str(source), "--out", str(tmp_path / out), "--method", "linear",
                                          "-q", *extra])
        assert result.exit_code == 0, result.output
    got, want = read_outputs(tmp_path / "out"), read_outputs(tmp_path / "sample_out")
    assert len(got) == 24 and got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    short = CliRunner().invoke(app, ["fill", str(folder), "--out", str(tmp_path / "x"), "--dry-run", "-q",
                                     "--band-names", ",".join(order[:-1])])
    one_line_error(short, "20210403_S2_T34VCL.tif", "12 bands, but --band-names names 11")


def test_a_folder_per_date_as_stac_downloads_lay_items_out_is_one_series(tmp_path):
    """A folder per date, the date in the folder's name and none in the files' (`S2B_34VCL_20210403_0_L2A/B04.tif`,
    `SCL.tif`: Earth Search's items downloaded one folder each). It was taken for a folder of tiles, each of
    whose files had no date. Now one series: with SCL on the bands' grid it fills as the sample does; with SCL at
    20 m, as those items hold it, the SCL is put on the 10 m grid without asking (as SAFE products' is)."""
    from utilise_cli.tiles import find_tiles

    series, coarse = tmp_path / "items", tmp_path / "items20"
    for scene in sorted(SAMPLE.glob("*_T34VCL.tif")):
        with rasterio.open(scene) as src, rasterio.open(scene.with_name(scene.stem + "_mask.tif")) as msk:
            profile, data, clouds, mask_profile = src.profile, src.read(), msk.read(1) > 0, msk.profile
        scl = np.where(clouds, 9, 4).astype(np.uint8)  # cloud high, vegetation
        for root in (series, coarse):
            item = root / f"S2B_34VCL_{scene.name[:8]}_0_L2A"
            item.mkdir(parents=True)
            for values, band in zip(data, ("B02", "B03", "B04", "B08")):
                with rasterio.open(item / f"{band}.tif", "w", **{**profile, "count": 1}) as dst:
                    dst.write(values[None])
            (item / "TCI.tif").write_bytes((item / "B04.tif").read_bytes())  # the true-colour layer: skipped
        with rasterio.open(series / item.name / "SCL.tif", "w", **mask_profile) as dst:
            dst.write(scl[None])
        half = scl[::2, ::2]
        with rasterio.open(coarse / item.name / "SCL.tif", "w", **{
                **mask_profile, "height": half.shape[0], "width": half.shape[1],
                "transform": mask_profile["transform"] @ rasterio.Affine.scale(2)}) as dst:
            dst.write(half[None])
    assert find_tiles(series) is None
    scenes = discover_scenes(series)
    assert len(scenes) == 12 and scenes[0].date == dt.date(2021, 4, 3) and scenes[0].mask_kind == "scl"
    assert scenes[0].folder == "S2B_34VCL_20210403_0_L2A"
    fills_as_the_sample(series, tmp_path / "same")
    result = CliRunner().invoke(app, ["fill", str(coarse), "--out", str(tmp_path / "coarse"), "--method", "linear",
                                      "-q"])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "coarse" / "20210501_filled_flags.tif") as flags, \
            rasterio.open(tmp_path / "same" / "folder_out" / "20210501_filled_flags.tif") as same:
        assert flags.shape == same.shape == (165, 149)
        filled, want = (f.read(1) > 0 for f in (flags, same))  # flags 0: observed
        assert abs(int(filled.sum()) - int(want.sum())) < 0.2 * want.sum()
