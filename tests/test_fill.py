"""`utilise fill` end to end on the real sample: COGs, grids, kept pixels, seams, bad input, interruption."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate
from typer.testing import CliRunner

from utilise_cli.cli import app
from utilise_cli.fill import FillOptions, fill
from utilise_cli.options import ReadOptions

from .conftest import ROOT, read_outputs

SAMPLE = ROOT / "sample_data"
runner = CliRunner()


def scenes_and_masks(folder: Path) -> list[tuple[Path, Path]]:
    return [(p, p.with_name(p.stem + "_mask.tif")) for p in sorted(folder.glob("*_T34VCL.tif"))]


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("linear")
    # The masks as given (no buffer, no screen), so that the tests below can check them against the mask files.
    report = fill(SAMPLE, out, FillOptions(method="linear", preview=True,
                                           read=ReadOptions(screen=False, mask_buffer=0)))
    return out, report


@pytest.fixture(scope="module")
def network_run(tmp_path_factory):
    checkpoint = ROOT.parent / "shared" / "reference" / "earthnet2021_seed0.pth"
    if not checkpoint.exists():
        pytest.skip(f"needs {checkpoint}")
    out = tmp_path_factory.mktemp("network")
    report = fill(SAMPLE, out, FillOptions(method="utilise", checkpoint=checkpoint, regenerate_all=True, overlap=32))
    return out, report


def test_one_valid_cog_per_date_on_the_input_grid(linear_run):
    out, report = linear_run
    pairs = scenes_and_masks(SAMPLE)
    assert len(report.outputs) == len(pairs) == 12
    for (scene, _), output in zip(pairs, sorted(report.outputs)):
        valid, errors, _ = cog_validate(str(output))
        assert valid, errors
        with rasterio.open(scene) as src, rasterio.open(output) as dst:
            assert (dst.crs, dst.transform, dst.shape, dst.count) == (src.crs, src.transform, src.shape, 4)
            assert dst.descriptions == ("B2", "B3", "B4", "B8") and dst.dtypes[0] == "uint16" and dst.nodata == 0
            assert dst.tags()["ACQUISITION_DATE"] == f"{scene.name[:4]}-{scene.name[4:6]}-{scene.name[6:8]}"
        assert cog_validate(str(output.with_name(output.stem + "_flags.tif")))[0]
    assert not list(out.glob(".*")), "no temporary files are left behind"
    assert (out / "preview.png").stat().st_size > 10_000


def test_cogs_copied_on_threads_equal_the_cogs_copied_one_by_one(linear_run, tmp_path, monkeypatch, caplog):
    import logging

    import utilise_cli.cog

    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("needs 2 cores to copy on more than one thread")
    out, report = linear_run  # copied on a thread per core (at most 4)
    monkeypatch.setattr(utilise_cli.cog, "COPY_THREADS", 1)
    with caplog.at_level(logging.INFO, logger="utilise_cli"):
        one = fill(SAMPLE, tmp_path, FillOptions(method="linear", read=ReadOptions(screen=False, mask_buffer=0)))
    assert "copying 24 outputs to COGs on 1 thread" in caplog.text
    assert [p.name for p in one.outputs] == [p.name for p in report.outputs]
    for output in one.outputs:
        for name in (output.name, output.stem + "_flags.tif"):
            assert cog_validate(str(tmp_path / name))[0], name
            with rasterio.open(out / name) as a, rasterio.open(tmp_path / name) as b:
                assert np.array_equal(a.read(), b.read()) and a.profile == b.profile and a.tags() == b.tags()
    assert not list(tmp_path.glob(".*")), "no temporary files are left behind"


def test_zstd_cogs_hold_the_same_pixels_and_a_rerun_with_another_codec_redoes_them(linear_run, tmp_path):
    """--compress zstd: valid COGs (outputs and flags) compressed with ZSTD, whose pixels,
    grid and tags but the fingerprint equal the DEFLATE run's; the codec is part of the fingerprint, so a rerun
    with the other one rewrites the outputs instead of keeping them."""
    out, report = linear_run
    read = ReadOptions(screen=False, mask_buffer=0)
    zstd = fill(SAMPLE, tmp_path, FillOptions(method="linear", compress="zstd", read=read))
    assert [p.name for p in zstd.outputs] == [p.name for p in report.outputs]
    for output in zstd.outputs:
        for name in (output.name, output.stem + "_flags.tif"):
            assert cog_validate(str(tmp_path / name))[0], name
            with rasterio.open(out / name) as a, rasterio.open(tmp_path / name) as b:
                assert (a.compression.value, b.compression.value) == ("DEFLATE", "ZSTD")
                assert np.array_equal(a.read(), b.read()) and (a.crs, a.transform) == (b.crs, b.transform)
                tags = [{k: v for k, v in t.tags().items() if k != "UTILISE_FINGERPRINT"} for t in (a, b)]
                assert tags[0] == tags[1]
    again = fill(SAMPLE, tmp_path, FillOptions(method="linear", compress="deflate", read=read))
    assert len(again.outputs) == 12 and not again.skipped_outputs
    with rasterio.open(again.outputs[0]) as src:
        assert src.compression.value == "DEFLATE"


def test_observed_pixels_unchanged_and_gaps_filled_plausibly(linear_run):
    out, _ = linear_run
    pairs = scenes_and_masks(SAMPLE)
    stack, masks, outputs, flags = [], [], [], []
    for scene, mask in pairs:
        date = scene.name[:8]
        with rasterio.open(scene) as s, rasterio.open(mask) as m, rasterio.open(out / f"{date}_filled.tif") as o, \
                rasterio.open(out / f"{date}_filled_flags.tif") as f:
            stack.append(s.read()), masks.append(m.read(1)), outputs.append(o.read()), flags.append(f.read(1))
    stack, masks, outputs, flags = map(np.stack, (stack, masks, outputs, flags))
    observed = (masks == 0) & (stack != 0).all(axis=1)
    kept = np.broadcast_to(observed[:, None], stack.shape)
    assert np.array_equal(outputs[kept], stack[kept])
    assert np.array_equal(flags == 0, observed)
    gaps = (flags == 1)
    assert gaps.sum() > 5000  # the sample has real clouds on several dates
    # Linear interpolation stays within the range of each pixel's clear observations.
    clear = np.where(np.broadcast_to(observed[:, None], stack.shape), stack, np.nan).astype(float)
    clear[:, :, ~observed.any(axis=0)] = 0  # never observed: no range to compare with
    low, high = np.nanmin(clear, axis=0), np.nanmax(clear, axis=0)
    filled = np.broadcast_to(gaps[:, None], stack.shape)
    values = outputs.astype(float)
    assert np.all(values[filled] >= np.broadcast_to(low, stack.shape)[filled] - 1)
    assert np.all(values[filled] <= np.broadcast_to(high, stack.shape)[filled] + 1)
    never = flags == 255
    assert never.any() and np.all(outputs.transpose(1, 0, 2, 3)[:, never] == 0)


def read_raster(path):
    with rasterio.open(path) as src:
        return src.read()


def test_mask_buffer_grows_every_cloud_mask_alike_in_any_stripe(tmp_path):
    flags = {}
    for chip, overlap in ((32, 8), (128, 32)):
        out = tmp_path / f"chip{chip}"
        result = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(out), "--method", "linear", "--mask-buffer",
                                     "2", "--no-screen", "--chip-size", str(chip), "--overlap", str(overlap), "-q"])
        assert result.exit_code == 0, result.output
        flags[chip] = np.stack([read_raster(p)[0] for p in sorted(out.glob("*_flags.tif"))])
    assert np.array_equal(flags[32], flags[128])  # 32 px stripes: the buffer crosses stripe borders
    stack = np.stack([read_raster(scene) for scene, _ in scenes_and_masks(SAMPLE)])
    cloud = np.stack([read_raster(mask)[0] for _, mask in scenes_and_masks(SAMPLE)]) != 0
    grown = np.zeros_like(cloud)  # a 5 x 5 square around every cloud pixel, by shifting
    h, w = cloud.shape[1:]
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            grown[:, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] |= \
                cloud[:, max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
    assert grown.sum() > 1.3 * cloud.sum()
    assert np.array_equal(flags[32] == 0, ~grown & (stack != 0).all(axis=1))


def test_network_fill_blends_every_pixel_from_the_chips(network_run):
    out, report = network_run
    assert report.chips_run == 4 and report.chips_skipped == 0
    with rasterio.open(out / "20210501_filled.tif") as dst, rasterio.open(out / "20210501_filled_flags.tif") as f:
        image, flags = dst.read(), f.read(1)
    data = image[:, flags != 255]
    # Every pixel with data anywhere in the series is the network's (sigmoid) output: strictly inside 0..1.
    assert data.min() >= 1 and data.max() <= 10000
    assert np.all(image[:, flags == 255] == 0)


def test_network_fill_keeps_grid_and_tags_checkpoint(network_run):
    out, _ = network_run
    with rasterio.open(out / "20210403_filled.tif") as dst:
        tags = dst.tags()
    assert tags["UTILISE_METHOD"] == "utilise" and len(tags["UTILISE_CHECKPOINT_SHA256"]) == 64
    assert tags["UTILISE_OBSERVED_PIXELS"] == "regenerated"


def test_rerun_skips_finished_outputs_and_interrupted_run_leaves_nothing_that_looks_finished(tmp_path):
    out = tmp_path / "out"

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fill(SAMPLE, out, FillOptions(method="linear"), progress=interrupt)
    # nothing that looks finished; the hidden partial files are kept for a resume (tests/test_safety.py)
    assert not [p for p in out.glob("*") if not p.name.startswith(".")]
    assert all(p.name.endswith((".partial.tif", ".json")) for p in out.glob(".*"))
    report = fill(SAMPLE, out, FillOptions(method="linear"))
    assert len(report.outputs) == 12
    (out / "20210501_filled.tif").unlink()
    again = fill(SAMPLE, out, FillOptions(method="linear"))
    assert [p.name for p in again.outputs] == ["20210501_filled.tif"] and len(again.skipped_outputs) == 11
    (out / "20210403_filled.tif").unlink()
    line = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(out), "--method", "linear"]).output
    assert f"wrote 1 COG to {out} (11 already there)" in line, line  # one COG, not "1 COGs"


def test_dry_run_prints_plan_and_writes_nothing(tmp_path):
    result = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(tmp_path / "o"), "--method", "linear", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "12 dates in" in result.output and "149 x 165 px" in result.output and "4 of 128 x 128" in result.output
    assert "masks     as given, grown by 1 px; plus the cloud screen" in result.output
    assert "network" not in result.output  # linear: no network to name
    assert not (tmp_path / "o").exists()
    plain = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(tmp_path / "o"), "--dry-run", "--no-screen",
                                "--mask-buffer", "0", "-q", "--device", "cpu", "--precision", "bf16"])
    assert "masks     as given; no cloud screen" in plain.output
    assert "network   utilise_s2_4band.pth (sha256 " in plain.output and "on cpu, bf16, 1 chip per pass" in plain.output


def test_dry_run_plans_from_the_checkpoint_s_header_as_the_loaded_network_would(tmp_path):
    from utilise_cli.plan import describe_plan, load_predictor, plan_fill, planning_predictor

    out = tmp_path / "o"
    fill(SAMPLE, out, FillOptions(method="linear"))  # outputs of another method: the plan must redo them
    for options in (FillOptions(device="cpu"), FillOptions(device="cpu", precision="bf16", overwrite=True),
                    FillOptions(method="linear")):
        planned = plan_fill(SAMPLE, out, options, planning_predictor(options))
        loaded = plan_fill(SAMPLE, out, options, load_predictor(options)[0])
        assert planned.fingerprints == loaded.fingerprints and planned.todo == loaded.todo
        assert describe_plan(planned, options, 1000) == describe_plan(loaded, options, 1000)
        assert (planned.estimated_memory_mb, planned.batch_size) == (loaded.estimated_memory_mb, loaded.batch_size)
    assert planned.todo == [] and len(loaded.fingerprints) == 12  # the linear outputs are up to date


def test_dry_run_never_imports_torch(tmp_path):
    import subprocess
    import sys

    from utilise_cli.hardware import no_gpu_for_torch

    # With a GPU possibly there (device auto) only torch can tell: that case loads it, by design.
    for device in ["cpu"] + (["auto"] if no_gpu_for_torch() else []):
        code = ("import sys; from utilise_cli.cli import app\n"
                f"sys.argv = ['utilise', 'fill', {str(SAMPLE)!r}, '--out', {str(tmp_path / 'o')!r}, '--dry-run', "
                f"'--device', {device!r}]\n"
                "try:\n    app()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
                "print('torch' in sys.modules)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert "4 of 128 x 128" in result.stdout and result.stdout.split()[-1] == "False", result.stdout
    assert not (tmp_path / "o").exists()



def test_no_gpu_is_said_only_where_torch_finds_none(monkeypatch):
    import torch

    from utilise_cli.hardware import no_gpu_for_torch

    # Said wrongly, a dry run would plan a GPU's fill on the CPU (batch, memory): the answer must be sound.
    assert not (no_gpu_for_torch() and torch.cuda.is_available())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert no_gpu_for_torch()

# ---- bad input: one line naming the file, exit 2, nothing written ---------------------------------------


def copy_sample(tmp_path: Path, n: int = 5) -> Path:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for scene, mask in scenes_and_masks(SAMPLE)[:n]:
        shutil.copy(scene, folder)
        shutil.copy(mask, folder)
    return folder


def write_raster(path: Path, data: np.ndarray, like: Path, descriptions=None, transform=None) -> None:
    with rasterio.open(like) as src:
        profile = src.profile
    profile.update(count=data.shape[0], height=data.shape[1], width=data.shape[2], dtype=data.dtype.name)
    if transform is not None:
        profile.update(transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)


def _other_grid(folder: Path) -> str:
    scene = sorted(folder.glob("*_T34VCL.tif"))[1]
    with rasterio.open(scene) as src:
        data, transform = src.read(), src.transform
    write_raster(scene, data, scene, ["B2", "B3", "B4", "B8"], transform @ rasterio.Affine.translation(3, 0))
    return scene.name


def _missing_band(folder: Path) -> str:
    scene = sorted(folder.glob("*_T34VCL.tif"))[2]
    with rasterio.open(scene) as src:
        data = src.read()[:3]
    write_raster(scene, data, scene, ["B2", "B3", "B4"])
    return scene.name


def _corrupt(folder: Path) -> str:
    bad = folder / "20210601_S2_T34VCL.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 50)
    return bad.name


def _cut_off(folder: Path) -> str:
    """A scene whose header is whole but whose tiles end early (an interrupted download), laid out as a COG:
    header first, so it opens and fails only when its pixels are read."""
    import rasterio.shutil

    scene = sorted(folder.glob("*_T34VCL.tif"))[4]
    whole = folder.parent / "whole.tif"
    rasterio.shutil.copy(scene, whole, driver="COG", blocksize=64)
    scene.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    whole.unlink()
    return scene.name


def _same_date(folder: Path) -> str:
    scene = sorted(folder.glob("*_T34VCL.tif"))[0]
    shutil.copy(scene, folder / f"{scene.stem}_copy.tif")
    return scene.stem


def _no_date(folder: Path) -> str:
    scene = sorted(folder.glob("*_T34VCL.tif"))[0]
    with rasterio.open(scene) as src:  # a copy without the ACQUISITION_DATE tag
        write_raster(folder / "scene_without_date.tif", src.read(), scene, ["B2", "B3", "B4", "B8"])
    return "scene_without_date.tif"


def _no_mask(folder: Path) -> str:
    mask = sorted(folder.glob("*_mask.tif"))[3]
    mask.unlink()
    return mask.name.replace("_mask", "")


def _no_crs(path: Path) -> str:
    """``path`` rewritten without its CRS (not georeferenced), as some exports come."""
    with rasterio.open(path) as src:
        data, profile, descriptions = src.read(), src.profile, src.descriptions
    profile.pop("crs")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
    return path.name


def _scene_without_crs(folder: Path) -> str:
    return _no_crs(sorted(folder.glob("*_T34VCL.tif"))[1])


def _mask_without_crs(folder: Path) -> str:
    return _no_crs(sorted(folder.glob("*_mask.tif"))[2])


def _empty(folder: Path) -> str:
    for p in folder.iterdir():
        p.unlink()
    return folder.name


@pytest.mark.parametrize("breaker,expected", [
    (_empty, "no GeoTIFF scenes"), (_no_date, "no acquisition date"), (_same_date, "two scenes on the same date"),
    (_no_mask, "no cloud mask"), (_other_grid, "on another grid"), (_missing_band, "has no band B8"),
    (_corrupt, "not a readable raster"), (_cut_off, "cannot read its pixels"),
    (_scene_without_crs, "has no CRS"), (_mask_without_crs, "--crs like --transform like"),
])
def test_bad_scene_folders_fail_cleanly(tmp_path, breaker, expected):
    folder = copy_sample(tmp_path)
    named = breaker(folder)
    out = tmp_path / "out"
    result = runner.invoke(app, ["fill", str(folder), "--out", str(out), "--method", "linear", "-q"])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.startswith("error:") and "\n" not in message and "Traceback" not in message
    assert expected in message and named in message
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("masks", [True, False])
def test_other_grid_is_accepted_with_align(tmp_path, masks):
    folder = copy_sample(tmp_path)
    _other_grid(folder)
    # A second scene on a grid of another size too (its mask stays on the first grid), and, without mask files,
    # the screen's empty masks made on the grid the scene is reprojected to.
    scene = sorted(folder.glob("*_T34VCL.tif"))[2]
    with rasterio.open(scene) as src:
        data, transform = src.read()[:, :-5, 3:], src.transform
    write_raster(scene, data, scene, ["B2", "B3", "B4", "B8"], transform @ rasterio.Affine.translation(3, 0))
    if not masks:
        for mask in folder.glob("*_mask.tif"):
            mask.unlink()
    report = fill(folder, tmp_path / "out", FillOptions(read=ReadOptions(align=True), method="linear"))
    with rasterio.open(report.outputs[2]) as dst, rasterio.open(sorted(folder.glob("*_T34VCL.tif"))[0]) as ref:
        assert dst.transform == ref.transform and dst.shape == ref.shape
        assert (dst.read(1) > 0).mean() > 0.9


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(blocker / "out"), "--method", "linear", "-q"])
    assert result.exit_code == 2 and "cannot write there" in result.output and str(blocker) in result.output


def test_checkpoint_with_other_bands_is_refused(tmp_path, reference_dir):
    result = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(tmp_path / "o"), "-q",
                                 "--checkpoint", str(reference_dir / "sen12mscrts_wo_s1_seed0.pth")])
    assert result.exit_code == 2
    assert "sen12mscrts_wo_s1_seed0.pth: fills 13 bands" in result.output
    assert not (tmp_path / "o").exists()


def test_shipped_weights_fill_without_seams_between_chips(tmp_path):
    """Chips of 64 px blended over 16 px against one chip over the whole scene: across the blend zones the
    filled image changes as smoothly as the seamless run does there."""
    from utilise_cli.weights import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("no shipped weights in this installation")
    chipped = fill(SAMPLE, tmp_path / "chipped", FillOptions(method="utilise", chip_size=64, overlap=16, regenerate_all=True))
    whole = fill(SAMPLE, tmp_path / "whole", FillOptions(method="utilise", chip_size=168, overlap=0, regenerate_all=True))
    assert chipped.chips_run > whole.chips_run == 1
    zones = set()
    for start in range(48, 149, 48):  # chips start every 48 px; each blend zone is 16 px wide
        zones.update(range(start, min(start + 16, 148)))
    zones = sorted(zones)
    jumps = {}
    for name, run in (("chipped", chipped), ("whole", whole)):
        values = []
        for path in sorted(run.outputs):
            with rasterio.open(path) as src:
                image = src.read().astype(np.float64)
            steps = np.abs(np.diff(image, axis=2))[:, :, zones]
            values.append(steps[:, image[0, :, zones].T > 0].mean())
        jumps[name] = float(np.mean(values))
    assert jumps["chipped"] <= 1.15 * jumps["whole"], jumps


def test_probability_masks_fill_like_the_binary_masks_they_were_made_from(tmp_path):
    folder = tmp_path / "prob"
    folder.mkdir()
    for path in SAMPLE.glob("*.tif"):
        if not path.stem.endswith("_mask"):
            shutil.copy(path, folder / path.name)
            continue
        with rasterio.open(path) as src:  # binary 0/1 -> a cloud probability of 0 / 80 %
            profile, data = src.profile, src.read()
        with rasterio.open(folder / path.name.replace("_mask", "_cldprb"), "w", **profile) as dst:
            dst.write((data * 80).astype(data.dtype))
    binary = fill(SAMPLE, tmp_path / "binary", FillOptions(method="linear"))
    prob = fill(folder, tmp_path / "p50", FillOptions(method="linear"))
    assert binary.filled_pixels == prob.filled_pixels > 0
    a, b = read_outputs(tmp_path / "binary"), read_outputs(tmp_path / "p50")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    high = fill(folder, tmp_path / "p90", FillOptions(read=ReadOptions(cloud_threshold=90, screen=False),
                                                       method="linear"))
    # 80 % is below a 90 % threshold: no cloud is occluded, only the dates' own no-data pixels are filled
    assert high.filled_pixels < binary.filled_pixels / 20


def test_probability_masks_as_fractions_or_bytes_are_read_on_their_own_scale(tmp_path):
    """Cloud probability stored as floats 0..1 (as s2cloudless computes it) or as bytes 0..255 (Sentinel Hub's
    CLP), with haze on the clear pixels (up to 45 %). Read as percent, the fractions hid every cloud (4,857
    pixel-dates filled instead of 17,982) and the bytes made haze cloud (24,476 pixels never observed): now
    the scale is found from the values and both fill as the binary masks they were made from do."""
    rng = np.random.default_rng(0)
    fractions, octets = tmp_path / "fractions", tmp_path / "bytes"
    for folder in (fractions, octets):
        folder.mkdir()
    for path in SAMPLE.glob("*_T34VCL.tif"):
        for folder in (fractions, octets):
            shutil.copy(path, folder / path.name)
        with rasterio.open(path.with_name(path.stem + "_mask.tif")) as src:
            profile, clouds = src.profile, src.read(1) > 0
        p = np.where(clouds, rng.uniform(0.6, 1, clouds.shape), rng.uniform(0, 0.45, clouds.shape))
        with rasterio.open(fractions / f"{path.stem}_cldprb.tif", "w", **{**profile, "dtype": "float32"}) as dst:
            dst.write(p.astype(np.float32)[None])
        with rasterio.open(octets / f"{path.stem}_clp.tif", "w", **profile) as dst:
            dst.write(np.round(p * 255).astype(np.uint8)[None])
    binary = fill(SAMPLE, tmp_path / "binary", FillOptions(method="linear"))
    want = read_outputs(tmp_path / "binary")
    for folder in (fractions, octets):
        report = fill(folder, tmp_path / f"{folder.name}_out", FillOptions(method="linear"))
        got = read_outputs(tmp_path / f"{folder.name}_out")
        assert report.filled_pixels == binary.filled_pixels and all(np.array_equal(got[k], want[k]) for k in want)


def test_bands_overwrite_and_float32_outputs(tmp_path):
    default = fill(SAMPLE, tmp_path / "d", FillOptions(method="linear", dtype="float32"))
    with rasterio.open(default.outputs[0]) as src:
        assert np.isnan(src.nodata) and src.dtypes[0] == "float32" and np.isnan(src.read()).any()
        assert cog_validate(str(default.outputs[0]))[0]
        reference = src.read()
    reordered = fill(SAMPLE, tmp_path / "r", FillOptions(bands=["B4", "B3", "B2", "B8"], method="linear",
                                                          dtype="float32"))
    with rasterio.open(reordered.outputs[0]) as src:
        assert src.descriptions == ("B4", "B3", "B2", "B8")
        assert np.array_equal(src.read()[[2, 1, 0, 3]], reference, equal_nan=True)
    again = fill(SAMPLE, tmp_path / "d", FillOptions(method="linear", dtype="float32"))
    assert not again.outputs and len(again.skipped_outputs) == 12
    redo = fill(SAMPLE, tmp_path / "d", FillOptions(method="adjusted", dtype="float32", overwrite=True))
    assert len(redo.outputs) == 12
    with rasterio.open(redo.outputs[0]) as src:
        assert src.tags()["UTILISE_METHOD"] == "adjusted"


@pytest.mark.parametrize("rows, cols", [(slice(0, 165), slice(70, 73)), (slice(80, 81), slice(0, 149))])
def test_a_strip_a_few_pixels_across_fills_with_the_network(tmp_path, rows, cols):
    # A crop 3 px wide or 1 row high: mirrored to the network's size multiple alone, its coarsest level was one
    # pixel across, which reflect padding cannot mirror ("Padding size should be less than the corresponding
    # input dimension", from the self-validation or the fill); and its preview's outlines, a contour of one row,
    # raised matplotlib's TypeError.
    import matplotlib.image

    window = rasterio.windows.Window.from_slices(rows, cols)
    folder = tmp_path / "strip"
    folder.mkdir()
    for pair in scenes_and_masks(SAMPLE):
        for path in pair:
            with rasterio.open(path) as src:
                profile = {key: value for key, value in src.profile.items() if key not in ("blockxsize", "blockysize")}
                profile.update(width=window.width, height=window.height, tiled=False,
                               transform=src.window_transform(window))
                with rasterio.open(folder / path.name, "w", **profile) as dst:
                    dst.write(src.read(window=window))
                    dst.descriptions = src.descriptions
    for method in ("auto", "utilise"):
        report = fill(folder, tmp_path / method, FillOptions(method=method, preview=True))
        assert report.chips_run and report.filled_pixels > 20, method
        picture = matplotlib.image.imread(report.preview)  # outlines only where a contour can be drawn
        assert 400 <= picture.shape[1] and picture.shape[0] <= 3 * picture.shape[1], picture.shape
        outputs = read_outputs(tmp_path / method)
        for scene, _ in scenes_and_masks(folder):
            with rasterio.open(scene) as src:
                given = src.read()
            filled = outputs[scene.name[:8] + "_filled.tif"]
            flags = outputs[scene.name[:8] + "_filled_flags.tif"][0]
            assert filled.shape == given.shape
            assert np.array_equal(filled[:, flags == 0], given[:, flags == 0])  # observed: kept
            assert (filled[:, (flags == 1) | (flags == 2)] > 0).all()  # filled: a value, not nodata
