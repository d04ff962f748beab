"""STAC in, STAC out: a local ItemCollection (pystac + rio-stac, one COG per band in Earth Search naming) fills
exactly like the folder it was made from, and the output catalog loads back with odc-stac. Real COGs throughout."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rio_stac import create_stac_item
from typer.testing import CliRunner

from utilise_cli.cli import app
from utilise_cli.fill import FillOptions, fill
from utilise_cli.options import ReadOptions
from utilise_cli.stac import item_offset

from .conftest import ROOT, one_line_error, read_outputs

SAMPLE = ROOT / "sample_data"
EARTH_SEARCH = {"B2": "blue", "B3": "green", "B4": "red", "B8": "nir"}
runner = CliRunner()


def _write_cog(path: Path, data: np.ndarray, profile: dict) -> Path:
    profile = {k: v for k, v in profile.items() if k not in ("blockxsize", "blockysize", "tiled", "interleave")}
    with rasterio.open(path, "w", **{**profile, "driver": "COG", "count": 1, "dtype": data.dtype.name}) as dst:
        dst.write(data, 1)
    return path


def _asset(path: Path, name: str, when: dt.datetime) -> pystac.Asset:
    return create_stac_item(str(path), input_datetime=when, asset_name=name, with_proj=True,
                            with_raster=True).assets[name]


def build_items(folder: Path, properties: dict | None = None, crs: str | None = None, dates: int = 12,
                relative: bool = True, add_dn: int = 0) -> Path:
    """The sample as a saved STAC search: one item per date, one COG asset per band (blue, green, red, nir)
    and an SCL asset (the binary mask as classes 4 / 9). ``crs``: the last item reprojected into it;
    ``add_dn``: added to every valid band value (as raw products of baseline 04.00 carry +1000)."""
    folder.mkdir()
    items = []
    scenes = sorted(SAMPLE.glob("*_T34VCL.tif"))[:dates]
    for n, scene in enumerate(scenes):
        date = scene.name[:8]
        when = dt.datetime.strptime(date, "%Y%m%d").replace(hour=10, minute=10, tzinfo=dt.timezone.utc)
        with rasterio.open(scene) as src, rasterio.open(scene.with_name(scene.stem + "_mask.tif")) as msk:
            layers = {EARTH_SEARCH[d]: src.read(i + 1) for i, d in enumerate(src.descriptions)}
            layers = {k: np.where(v > 0, v + add_dn, 0).astype(v.dtype) for k, v in layers.items()}
            layers["scl"] = np.where(msk.read(1) > 0, 9, 4).astype(np.uint8)
            profile = src.profile
        if crs and n == len(scenes) - 1:
            transform, width, height = calculate_default_transform(profile["crs"], crs, profile["width"],
                                                                   profile["height"], *src.bounds)
            for name, layer in layers.items():
                moved = np.zeros((height, width), layer.dtype)
                reproject(layer, moved, src_transform=profile["transform"], src_crs=profile["crs"],
                          dst_transform=transform, dst_crs=crs, resampling=Resampling.nearest)
                layers[name] = moved
            profile = {**profile, "crs": crs, "transform": transform, "width": width, "height": height}
        item = None
        for name, layer in layers.items():
            path = _write_cog(folder / f"S2B_34VCL_{date}_{name}.tif", layer, profile)
            if item is None:
                item = create_stac_item(str(path), input_datetime=when, id=f"S2B_34VCL_{date}_0_L2A",
                                        asset_name=name, with_proj=True, with_raster=True)
            else:
                item.add_asset(name, _asset(path, name, when))
        item.properties.update({"s2:processing_baseline": "03.01", "earthsearch:boa_offset_applied": False,
                                **(properties or {})})
        if relative:
            for asset in item.assets.values():
                asset.href = Path(asset.href).name
        items.append(item)
    path = folder / "items.json"
    pystac.ItemCollection(items).save_object(str(path))
    return path


@pytest.fixture(scope="module")
def stac_runs(tmp_path_factory):
    """`utilise fill items.json` and `utilise fill sample_data`, both with the defaults; the second with --out
    relative to the working folder (as users type it)."""
    root = tmp_path_factory.mktemp("stac")
    items = build_items(root / "search")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for source, out in ((items, root / "from_stac"), (SAMPLE, Path("from_folder"))):
            result = runner.invoke(app, ["fill", str(source), "--out", str(out), "-q"])
            assert result.exit_code == 0, result.output
    return root


def test_a_stac_search_fills_exactly_like_the_folder_it_came_from(stac_runs):
    from_stac, from_folder = read_outputs(stac_runs / "from_stac"), read_outputs(stac_runs / "from_folder")
    assert len(from_stac) == 24 and from_stac.keys() == from_folder.keys()
    for name in from_stac:
        assert np.array_equal(from_stac[name], from_folder[name]), name  # same grid: no resampling, same DN
        with rasterio.open(stac_runs / "from_stac" / name) as a, rasterio.open(stac_runs / "from_folder" / name) as b:
            assert a.crs == b.crs and a.transform == b.transform and a.descriptions == b.descriptions
    with rasterio.open(stac_runs / "from_stac" / "20210403_filled.tif") as src:
        assert src.tags()["STAC_ITEMS"] == "S2B_34VCL_20210403_0_L2A"
    report = json.loads((stac_runs / "from_stac" / "fill_report.json").read_text())
    assert report["method"] == json.loads((stac_runs / "from_folder" / "fill_report.json").read_text())["method"]


def test_the_output_catalog_loads_back_with_odc_stac_as_the_cogs(stac_runs):
    import odc.stac

    out = stac_runs / "from_folder"
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    items = sorted(catalog.get_items(), key=lambda i: i.datetime)
    assert len(items) == 12 and items[0].properties["utilise:method"]
    cube = odc.stac.load(items, bands=["B2", "B3", "B4", "B8", "flags"], chunks={})
    cogs = read_outputs(out)
    for t, item in enumerate(items):
        stem = f"{item.datetime:%Y%m%d}_filled"
        bands = np.stack([cube[b].isel(time=t).values for b in ("B2", "B3", "B4", "B8")])
        assert np.array_equal(bands, cogs[f"{stem}.tif"])
        assert np.array_equal(cube["flags"].isel(time=t).values, cogs[f"{stem}_flags.tif"][0])
    with rasterio.open(out / "20210403_filled.tif") as src:
        assert cube.odc.geobox.transform == src.transform and cube.odc.geobox.crs.epsg == src.crs.to_epsg()
    # The catalog moves with its folder: every href in it is relative.
    text = "".join(p.read_text() for p in out.glob("*.json") if p.name != "fill_report.json")
    assert str(out) not in text


def test_bbox_cuts_the_area_and_keeps_the_pixels(tmp_path):
    items = build_items(tmp_path / "search")
    full, part = tmp_path / "full", tmp_path / "part"
    # The screen and the mask buffer look at neighbours, which a cut does not have at its edges: off here.
    plain = ["--no-screen", "--mask-buffer", "0"]
    result = runner.invoke(app, ["fill", str(items), "--out", str(full), "--method", "linear", "-q", *plain])
    assert result.exit_code == 0, result.output
    # lon/lat box inside the scene, about its middle third
    with rasterio.open(full / "20210403_filled.tif") as src:
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    box = f"{west + (east - west) / 3},{south + (north - south) / 3},{east - (east - west) / 3},{north - (north - south) / 3}"
    result = runner.invoke(app, ["fill", str(items), "--out", str(part), "--method", "linear", "-q", "--bbox", box, *plain])
    assert result.exit_code == 0, result.output
    with rasterio.open(full / "20210403_filled.tif") as a, rasterio.open(part / "20210403_filled.tif") as b:
        assert b.width < a.width / 2 and b.height < a.height / 2 and b.crs == a.crs
        col, row = ~a.transform @ (b.transform.c, b.transform.f)
        assert col == int(col) and row == int(row)  # on the same pixel grid
        window = a.read(window=((int(row), int(row) + b.height), (int(col), int(col) + b.width)))
        assert np.array_equal(window, b.read())
    # A box beside the scene (one degree east and north): refused in one line, not filled with no data and then
    # blamed on the masks ("no pixel of any date is observed ...; pass --mask-kind binary").
    away = f"{west + 1},{south + 1},{east + 1},{north + 1}"
    one_line_error(runner.invoke(app, ["fill", str(items), "--out", str(tmp_path / "away"), "-q", "--bbox", away]),
                   items.name, "--bbox", "meets no item")
    assert not (tmp_path / "away").exists()


def test_offsets_come_from_the_items_metadata():
    def item(properties, raster=None):
        it = pystac.Item("x", None, None, dt.datetime(2022, 6, 1, tzinfo=dt.timezone.utc), properties)
        it.add_asset("red", pystac.Asset("red.tif", extra_fields={"raster:bands": [raster]} if raster else {}))
        return it

    assert item_offset(item({"earthsearch:boa_offset_applied": True, "s2:processing_baseline": "04.00"}), "red") == 0
    assert item_offset(item({"earthsearch:boa_offset_applied": False, "s2:processing_baseline": "04.00"}), "red") == -0.1
    assert item_offset(item({"earthsearch:boa_offset_applied": False, "s2:processing_baseline": "03.01"}), "red") == 0
    assert item_offset(item({"s2:processing_baseline": "05.09"}), "red") == -0.1  # Planetary Computer: raw DN
    assert item_offset(item({}, {"scale": 0.0001, "offset": -0.1}), "red") == -0.1  # raster extension
    assert item_offset(item({}), "red") is None


def test_raw_baseline_04_items_decode_to_the_same_reflectance(tmp_path):
    """The sample stored +1000 DN as baseline 04.00 raw products are: the item metadata gives the offset."""
    items = build_items(tmp_path / "search", {"s2:processing_baseline": "04.00"}, dates=4, add_dn=1000)
    plain = build_items(tmp_path / "plain", dates=4)
    # The screen off: its thresholds would turn float rounding of the two decodings into a few flipped pixels.
    options = FillOptions(method="linear", dtype="float32", read=ReadOptions(screen=False))
    a = fill(items, tmp_path / "raw", options)
    fill(plain, tmp_path / "harmonised", options)
    assert len(a.outputs) == 4
    for name, values in read_outputs(tmp_path / "raw").items():
        np.testing.assert_allclose(values, read_outputs(tmp_path / "harmonised")[name], atol=1e-6)


def test_items_across_baseline_04_decode_each_date_with_its_own_offset(tmp_path):
    """A search spanning 25 January 2022: the later items raw DN (+1000, baseline 04.00), the earlier ones not."""
    raw = build_items(tmp_path / "raw", {"s2:processing_baseline": "04.00"}, dates=4, relative=False, add_dn=1000)
    plain = build_items(tmp_path / "plain", dates=4, relative=False)
    mixed = pystac.ItemCollection([*list(pystac.ItemCollection.from_file(str(plain)))[:2],
                                   *list(pystac.ItemCollection.from_file(str(raw)))[2:]])
    mixed.save_object(str(tmp_path / "mixed.json"))
    options = FillOptions(method="linear", dtype="float32", read=ReadOptions(screen=False))
    report = fill(tmp_path / "mixed.json", tmp_path / "out_mixed", options)
    fill(plain, tmp_path / "out_plain", options)
    assert len(report.outputs) == 4
    for name, values in read_outputs(tmp_path / "out_mixed").items():
        np.testing.assert_allclose(values, read_outputs(tmp_path / "out_plain")[name], atol=1e-6)


def test_items_in_two_crs_need_crs_and_then_fill(tmp_path):
    items = build_items(tmp_path / "search", crs="EPSG:32633", dates=4)
    one_line_error(runner.invoke(app, ["fill", str(items), "--out", str(tmp_path / "o"), "-q"]),
                   "EPSG:32633", "EPSG:32634", "--crs")
    assert not (tmp_path / "o").exists()
    # Warping into arrays, rasterio warns "Dataset has no geotransform" about the array now and then (about 5
    # fills in 6 here before it was silenced): users must not read that as a fault in their scenes.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for out in ("o", "again"):
            result = runner.invoke(app, ["fill", str(items), "--out", str(tmp_path / out), "-q", "--method",
                                         "linear", "--crs", "EPSG:32634", "--resolution", "20"])
            assert result.exit_code == 0, result.output
    assert not [w for w in caught if issubclass(w.category, rasterio.errors.NotGeoreferencedWarning)]
    with rasterio.open(tmp_path / "o" / "20210501_filled.tif") as src:
        assert src.crs.to_epsg() == 32634 and src.res == (20, 20)


def test_bad_stac_input_is_one_line_and_writes_nothing(tmp_path):
    items = build_items(tmp_path / "search", dates=3)
    data = json.loads(items.read_text())
    variants = {}
    no_red = json.loads(json.dumps(data))
    del no_red["features"][1]["assets"]["red"]
    variants["no_red"] = (no_red, ["S2B_34VCL_20210418_0_L2A", "red"])
    empty = {**data, "features": []}
    variants["empty"] = (empty, ["no items"])
    missing = json.loads(json.dumps(data))
    missing["features"][2]["assets"]["nir"]["href"] = "gone.tif"
    variants["missing"] = (missing, ["gone.tif", "cannot be opened"])
    no_mask = json.loads(json.dumps(data))
    for feature in no_mask["features"]:
        del feature["assets"]["scl"]
    variants["no_mask"] = (no_mask, ["cloud mask", "--mask-band"])
    for name, (content, words) in variants.items():
        path = tmp_path / "search" / f"{name}.json"
        path.write_text(json.dumps(content))
        one_line_error(runner.invoke(app, ["fill", str(path), "--out", str(tmp_path / name), "-q"]), *words)
        assert not (tmp_path / name).exists(), name
    (tmp_path / "search" / "broken.json").write_text("{not json")
    one_line_error(runner.invoke(app, ["fill", str(tmp_path / "search" / "broken.json"), "--out",
                                       str(tmp_path / "b"), "-q"]), "broken.json", "STAC")
    one_line_error(runner.invoke(app, ["fill", str(SAMPLE), "--out", str(tmp_path / "c"), "-q", "--crs",
                                       "EPSG:32634"]), "--crs", "STAC input")


def test_dry_run_lists_items_assets_and_grid(tmp_path):
    items = build_items(tmp_path / "search", dates=3)
    result = runner.invoke(app, ["fill", str(items), "--out", str(tmp_path / "o"), "--dry-run", "-q"])
    assert result.exit_code == 0, result.output
    assert "3 STAC items on 3 dates" in result.output and "B4=red" in result.output and "mask scl" in result.output
    assert "S2B_34VCL_20210418_0_L2A" in result.output and "149 x 165 px, EPSG:32634" in result.output
    assert not (tmp_path / "o").exists()
