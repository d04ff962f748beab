"""Finding scenes, bands and masks in a folder."""

from __future__ import annotations

import datetime as dt

from utilise_cli.scenes import discover_scenes
from utilise_cli.sentinel2 import band_key

from .conftest import shared_path


def test_band_names():
    assert [band_key(b) for b in ["B02", "b2", "S2-L2A-B02", "s2_B8A", "SCL"]] == ["B2", "B2", "B2", "B8A", "SCL"]


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
