"""Acquisition dates from file names and tags, and day-of-year positions."""

from __future__ import annotations

import datetime as dt

import pytest

from utilise_cli.dates import date_from_name, date_from_tags, day_positions
from utilise_cli.scenes import discover_scenes

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
    ("S2_2021_06_28.tif", dt.date(2021, 6, 28)),
    ("s2.2021.06.28.tif", dt.date(2021, 6, 28)),
    ("export_2021-Jun-28.tif", dt.date(2021, 6, 28)),
    ("mixed_2021_06-28.tif", None),  # two different separators: not a date
    ("v2021.1.12.tif", None),
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


def test_discovers_spelled_out_dates_in_portugal():
    scenes = discover_scenes(shared_path("data", "greenearthnet", "geotiff_portugal"))
    assert [s.date.month for s in scenes] == [6, 7, 8, 8, 9, 9, 10]
