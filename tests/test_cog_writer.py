"""cog_writer makes the COGs that GDAL's COG driver would make from the same partial file: the same pixels at every
level, the same georeferencing and metadata, a layout the COG validator accepts, tiles that a TIFF reader other
than GDAL decodes: the outputs (overviews averaged) and their flags (overviews of the nearest pixel)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from utilise_cli.cog import COG_LEVEL
from utilise_cli.cog_writer import TILE, write_cog

CASES = {  # dtype: (nodata, predictor, bands, overview resampling) as fill writes them
    "uint16": (0, 2, 4, "average"),
    "float32": (float("nan"), 3, 2, "average"),
    "uint8": (255, 2, 1, "nearest"),  # the flags
}


def _partial(path, height: int, width: int, dtype: str, seed: int = 0) -> np.ndarray:
    """A partial file as StripeWriter leaves it (ZSTD, 256 x 32 tiles, GDAL's metadata), with nodata in its lower
    half: in a block, in scattered pixels and along an edge."""
    nodata, predictor, bands, _ = CASES[dtype]
    rng = np.random.default_rng(seed)
    most = 255 if dtype == "uint8" else 10000  # every pixel its own value: a wrong pick shows
    data = (rng.integers(1, most, (bands, height, width)) * (1e-4 if dtype == "float32" else 1)).astype(dtype)
    gaps = np.zeros((height, width), bool)  # the first 512 rows have none (averaged in integers without counts)
    gaps[height * 3 // 5:height * 2 // 3, width // 4:width // 2] = True
    gaps[height // 2:] |= rng.random((height - height // 2, width)) < 0.03
    gaps[height // 2:, -7:] = True
    data[:, gaps] = nodata
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands, dtype=dtype,
                       nodata=nodata, tiled=True, blockxsize=256, blockysize=32, compress="zstd",
                       predictor=predictor, crs="EPSG:32634", transform=from_origin(500000, 6500000, 10, 10)) as dst:
        dst.write(data)
        dst.update_tags(ACQUISITION_DATE="2021-04-03", UTILISE_METHOD="utilise")
        dst.descriptions = [f"B{i}" for i in range(2, 2 + bands)]
        if dtype == "uint16":
            dst.scales, dst.offsets = [1e-4] * bands, [0.0] * bands
    return data


def _gdal(partial, path, predictor: int, resampling: str) -> None:
    rasterio.shutil.copy(partial, path, driver="COG", compress="DEFLATE", level=COG_LEVEL, predictor=predictor,
                         blocksize=512, overview_resampling=resampling)


def _levels(path) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        count = len(src.overviews(1))
    out = []
    for level in [None, *range(count)]:
        with rasterio.open(path, overview_level=level) as src:
            out.append(src.read())
    return out


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b


@pytest.mark.parametrize("dtype, shape", [(dtype, shape) for dtype in CASES
                                          for shape in [(1100, 1300), (1030, 1373), (1025, 3)]]
                         + [("uint8", (1001, 777))])
def test_every_level_metadata_and_layout_equal_gdal_s_cog_driver(tmp_path, dtype, shape):
    # 1100 x 1300 halves exactly at each level; 1373 columns do not, so some pixels of the overviews average
    # three columns, partly weighted (GDAL's chunk edges, which can differ, fall elsewhere here), and the nearest
    # pixel is not every second one; 1025 x 3 ends in an overview one pixel wide, its last tile row one row high.
    # 1001 rows: row 250 of the first overview lies on a tie of the nearest pixel's rounding (an average there
    # falls on one of GDAL's chunk edges).
    nodata, predictor, _, resampling = CASES[dtype]
    data = _partial(tmp_path / ".p.tif", *shape, dtype)
    _gdal(tmp_path / ".p.tif", tmp_path / "gdal.tif", predictor, resampling)
    write_cog(tmp_path / ".p.tif", tmp_path / "ours.tif", predictor, resampling)
    gdal, ours = _levels(tmp_path / "gdal.tif"), _levels(tmp_path / "ours.tif")
    assert [x.shape for x in ours] == [x.shape for x in gdal] and len(ours) >= 2
    assert np.array_equal(ours[0], data, equal_nan=dtype == "float32")
    for level, (a, b) in enumerate(zip(ours, gdal)):
        assert _same(a, b).all(), level
    with rasterio.open(tmp_path / "gdal.tif") as g, rasterio.open(tmp_path / "ours.tif") as o:
        assert (o.crs, o.transform, o.dtypes, o.block_shapes, o.overviews(1)) == \
               (g.crs, g.transform, g.dtypes, g.block_shapes, g.overviews(1))
        assert str(o.nodata) == str(g.nodata)
        assert o.tags() == g.tags() and o.tags()["UTILISE_METHOD"] == "utilise"
        assert o.tags(ns="IMAGE_STRUCTURE") == g.tags(ns="IMAGE_STRUCTURE")
        assert o.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert (o.descriptions, o.scales, o.offsets) == (g.descriptions, g.scales, g.offsets)
    valid, errors, warnings = cog_validate(str(tmp_path / "ours.tif"), strict=True)
    assert valid and not errors and not warnings
    # about the size of GDAL's (ISA-L against libdeflate, both at level 1), where the tiles hold more than padding
    if min(shape) >= TILE:
        assert abs((tmp_path / "ours.tif").stat().st_size / (tmp_path / "gdal.tif").stat().st_size - 1) < 0.03
    if predictor == 2:  # a reader that is not GDAL (tifffile decodes the floating-point predictor only with more)
        tifffile = pytest.importorskip("tifffile")
        pages = tifffile.TiffFile(tmp_path / "ours.tif").pages
        assert len(pages) == len(ours)
        for page, level in zip(pages, ours):
            assert np.array_equal(page.asarray().reshape(level.shape[1], level.shape[2], -1).transpose(2, 0, 1), level)


def _area_average(above: np.ndarray, height: int, width: int, nodata: float) -> np.ndarray:
    """Each pixel the mean of the valid pixels of the level above, each weighted by how much of it the pixel's area
    ([i r, (i + 1) r) along each axis, r the ratio of sizes) covers; rounded half up; worked out by brute force."""

    def cover(n_above: int, n: int) -> np.ndarray:
        edges = np.arange(n + 1) * (n_above / n)
        left, right = np.arange(n_above), np.arange(n_above) + 1
        return np.clip(np.minimum(edges[1:, None], right) - np.maximum(edges[:-1, None], left), 0, None)

    ok = above != nodata
    y, x = cover(above.shape[1], height), cover(above.shape[2], width)
    total = np.stack([y @ (band * ok[i]) @ x.T for i, band in enumerate(above.astype(np.float64))])
    weight = np.stack([y @ band @ x.T for band in ok.astype(np.float64)])
    with np.errstate(invalid="ignore"):
        return np.where(weight > 0, np.floor(total / weight + 0.5), nodata).astype(above.dtype)


def test_averages_over_odd_sizes_weigh_each_pixel_by_the_area_covered(tmp_path):
    # 1030 x 1373 -> 515 x 686 -> 257 x 343: ratios of 2.0015 and 2.004 put three pixels under some windows.
    from utilise_cli.cog_writer import average_windows

    assert average_windows(1373, 686).weights.shape[1] == 3 and average_windows(515, 257).weights.shape[1] == 3
    _partial(tmp_path / ".p.tif", 1030, 1373, "uint16", seed=1)
    write_cog(tmp_path / ".p.tif", tmp_path / "ours.tif", 2)
    ours = _levels(tmp_path / "ours.tif")
    assert [x.shape[1:] for x in ours] == [(1030, 1373), (515, 686), (257, 343)]
    for level in (1, 2):
        # up to 1 DN where the mean lands on a half, summed here in another order (21 of 1.4 million pixels)
        wrong = np.abs(ours[level].astype(int) - _area_average(ours[level - 1], *ours[level].shape[1:], 0))
        assert wrong.max() <= 1 and (wrong > 0).mean() < 1e-4, (level, wrong.max(), (wrong > 0).sum())


def test_a_bigtiff_layout_reads_the_same(tmp_path):
    data = _partial(tmp_path / ".p.tif", 600, 700, "uint16")
    write_cog(tmp_path / ".p.tif", tmp_path / "big.tif", 2, bigtiff=True)
    write_cog(tmp_path / ".p.tif", tmp_path / "classic.tif", 2)
    assert (tmp_path / "big.tif").read_bytes()[:4] == b"II+\0"
    assert (tmp_path / "classic.tif").read_bytes()[:4] == b"II*\0"
    for a, b in zip(_levels(tmp_path / "big.tif"), _levels(tmp_path / "classic.tif")):
        assert np.array_equal(a, b)
    assert np.array_equal(_levels(tmp_path / "big.tif")[0], data)
    assert cog_validate(str(tmp_path / "big.tif"), strict=True)[0]


@pytest.mark.parametrize("dtype", list(CASES))
def test_a_cog_built_from_rows_in_any_pieces_is_byte_identical_and_gives_its_rows_back(tmp_path, dtype):
    # A fill pushes 96 rows at a time (chip 128, overlap 32) or a resumed run's copy 128: DEFLATE's streams would
    # differ with the pieces (sizes off by a few bytes) if the builder did not cut the rows alike.
    from utilise_cli.cog_writer import CogBuilder, READ_ROWS

    nodata, predictor, bands, resampling = CASES[dtype]
    data = _partial(tmp_path / ".p.tif", 1100, 1300, dtype)
    write_cog(tmp_path / ".p.tif", tmp_path / "copied.tif", predictor, resampling)

    def builder() -> CogBuilder:
        return CogBuilder((1100, 1300), bands, np.dtype(dtype), predictor, nodata, resampling, tmp_path)

    built = builder()
    for start, stop in [(0, 96), (96, 100), (100, 355), (355, 1100)]:
        built.push(data[:, start:stop])
    empty = builder()
    with pytest.raises(ValueError, match="0 of 1100 rows pushed"):
        empty.write(tmp_path / ".p.tif", tmp_path / "short.tif")
    empty.close()
    built.write((tmp_path / ".p.tif").read_bytes(), tmp_path / "built.tif")
    built.close()
    assert (tmp_path / "built.tif").read_bytes() == (tmp_path / "copied.tif").read_bytes()
    # interrupted after a whole row of tiles, part of the next compressed and some rows still waiting
    assert 700 % READ_ROWS and 700 > TILE
    halfway = builder()
    for start in range(0, 700, 96):
        halfway.push(data[:, start:min(start + 96, 700)])
    back = np.concatenate(list(halfway.rows_back()), axis=1)
    halfway.close()
    assert back.dtype == data.dtype and np.array_equal(back, data[:, :700], equal_nan=dtype == "float32")
