"""Nothing silently wrong: decoding checked rather than assumed, honest outputs, and one line with exit code 2
(and nothing under a final name) for every user error. Real GeoTIFFs written and read with rasterio."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from typer.testing import CliRunner

from utilise_cli.cli import app
from utilise_cli.weights import DEFAULT_WEIGHTS

from .conftest import ROOT, fills_as_the_sample, one_line_error, read_outputs

SAMPLE = ROOT / "sample_data"
runner = CliRunner()


def _copy(out: Path, transform=None, dtype: str | None = None, tags: dict | None = None, masks=None) -> Path:
    """The sample with its band values through ``transform`` (stored as ``dtype``) and extra tags; masks through
    ``masks`` (either may change the size)."""
    out.mkdir()
    for path in sorted(SAMPLE.glob("*.tif")):
        with rasterio.open(path) as src:
            profile, data, names = src.profile, src.read(), src.descriptions
        is_mask = path.stem.endswith("_mask")
        change = masks if is_mask else transform
        if change is None and (is_mask or not tags):
            shutil.copy(path, out / path.name)
            continue
        if change is not None:
            data = change(data)
            profile.update(height=data.shape[-2], width=data.shape[-1])
        if dtype and not is_mask:
            profile.update(dtype=dtype)
        with rasterio.open(out / path.name, "w", **profile) as dst:
            dst.write(data.astype(profile["dtype"]))
            dst.descriptions = names
            if tags and not is_mask:
                dst.update_tags(**tags)
    return out


def _rewrite(path: Path, change, tags: dict | None = None, **profile) -> None:
    """Write a scene again in place: its bands through ``change``, its profile updated by ``profile``, its band
    names kept, ``tags`` added."""
    with rasterio.open(path) as src:
        old, data, names = src.profile, src.read(), src.descriptions
    old.update(profile)
    with rasterio.open(path, "w", **old) as dst:
        dst.write(change(data).astype(old["dtype"]))
        dst.descriptions = names
        if tags:
            dst.update_tags(**tags)


def _fill(folder: Path, out: Path, *args: str):
    return runner.invoke(app, ["fill", str(folder), "--out", str(out), "--method", "linear", "-q", *args])


def _nothing_final(out: Path) -> None:
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert _fill(SAMPLE, out).exit_code == 0
    return read_outputs(out)


def test_float_reflectance_is_detected_and_filled_like_the_dn_it_came_from(tmp_path, reference):
    folder = _copy(tmp_path / "float", lambda dn: dn.astype(np.float32) * np.float32(1e-4), dtype="float32")
    result = _fill(folder, tmp_path / "out")
    assert result.exit_code == 0, result.output
    got = read_outputs(tmp_path / "out")
    assert got.keys() == reference.keys() and all(np.array_equal(got[k], reference[k]) for k in got)
    # told the wrong scale, it stops instead of writing DN of 0..4
    one_line_error(_fill(folder, tmp_path / "wrong", "--scale", "1e-4"), "--scale", "median reflectance")
    _nothing_final(tmp_path / "wrong")


def test_baseline_04_offset_is_applied_from_the_tags_or_asked_for(tmp_path):
    shifted = lambda dn: np.where(dn == 0, 0, dn.astype(np.int32) + 1000)  # noqa: E731
    tagged = _copy(tmp_path / "tagged", shifted, tags={"BOA_ADD_OFFSET_B2": "-1000"})
    assert _fill(tagged, tmp_path / "auto").exit_code == 0
    assert _fill(tagged, tmp_path / "told", "--offset", "-0.1").exit_code == 0
    a, b = read_outputs(tmp_path / "auto"), read_outputs(tmp_path / "told")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    untagged = _copy(tmp_path / "baseline", shifted, tags={"PROCESSING_BASELINE": "04.00"})
    one_line_error(_fill(untagged, tmp_path / "ask"), "--offset -0.1", "04.00")
    _nothing_final(tmp_path / "ask")


def test_a_series_across_baseline_04_reads_each_date_with_its_own_offset(tmp_path):
    """A year's series often spans 25 January 2022: the later dates' raw DN carry +1000 (tagged), the earlier
    ones none. Each date is decoded with its own offset, so the fill equals the sample's."""
    shifted = lambda dn: np.where(dn == 0, 0, dn.astype(np.int32) + 1000)  # noqa: E731
    mixed = _copy(tmp_path / "mixed", shifted, tags={"PROCESSING_BASELINE": "04.00", "BOA_ADD_OFFSET_B2": "-1000"})
    early = sorted(p.name for p in SAMPLE.glob("*_T34VCL.tif"))[:5]
    for name in early:
        shutil.copy(SAMPLE / name, mixed / name)
    fills_as_the_sample(mixed, tmp_path)
    dry = runner.invoke(app, ["fill", str(mixed), "--out", str(tmp_path / "dry"), "--dry-run", "-q"])
    assert ("reflectance = value x 0.0001 + 0 on 5 dates (2021-04-03..2021-05-21); value x 0.0001 - 0.1 on 7 dates "
            "(2021-06-02..2021-07-25)") in dry.output
    # a later date that says baseline 04.00 but not its offset stops the fill, naming that file
    late = sorted(mixed.glob("*_T34VCL.tif"))[-1]
    _rewrite(late, lambda data: data, {"PROCESSING_BASELINE": "04.00"})
    one_line_error(_fill(mixed, tmp_path / "ask"), late.name, "--offset -0.1", "04.00")
    _nothing_final(tmp_path / "ask")


def test_scenes_whose_band_metadata_state_scale_and_offset_are_decoded_with_them(tmp_path):
    """GDAL's own band scale and offset (reflectance = DN x 0.0001 - 0.1: raw DN of baseline 04.00, as some
    archives' COGs state it instead of a BOA_ADD_OFFSET tag) on the later dates: each date is decoded as its
    metadata say, so the fill equals the sample's. They were ignored: the outputs 1000 DN too bright."""
    folder = _copy(tmp_path / "stated")
    for path in sorted(folder.glob("*_T34VCL.tif"))[5:]:
        _rewrite(path, lambda dn: np.where(dn == 0, 0, dn.astype(np.int32) + 1000))
        with rasterio.open(path, "r+") as dst:
            dst.scales, dst.offsets = [1e-4] * dst.count, [-0.1] * dst.count
    fills_as_the_sample(folder, tmp_path)
    dry = runner.invoke(app, ["fill", str(folder), "--out", str(tmp_path / "dry"), "--dry-run", "-q"])
    assert "value x 0.0001 - 0.1 on 7 dates (2021-06-02..2021-07-25)" in dry.output, dry.output
    # every date stated so (the first one's decoding found from its metadata too): within a DN of the sample's,
    # without the screen, whose thresholds the last bit of float rounding can tip
    for path in sorted(folder.glob("*_T34VCL.tif"))[:5]:
        _rewrite(path, lambda dn: np.where(dn == 0, 0, dn.astype(np.int32) + 1000))
        with rasterio.open(path, "r+") as dst:
            dst.scales, dst.offsets = [1e-4] * dst.count, [-0.1] * dst.count
    for source, out in ((folder, "all"), (SAMPLE, "sample")):
        assert _fill(source, tmp_path / out, "--no-screen").exit_code == 0
    got, want = read_outputs(tmp_path / "all"), read_outputs(tmp_path / "sample")
    assert got.keys() == want.keys() and all(np.abs(got[k].astype(int) - want[k]).max() <= 1 for k in got)


def test_bands_stored_as_bytes_stop_with_the_fix(tmp_path):
    """A true-colour style export (bands stretched to 0..255 bytes) was read as DN / 10000 and filled silently;
    now it stops naming the file, whether the first date is stored so or only a later one."""
    stretched = _copy(tmp_path / "bytes", lambda dn: np.clip(dn / 3000 * 255, 0, 255), dtype="uint8")
    one_line_error(_fill(stretched, tmp_path / "out"), "20210403_S2_T34VCL.tif", "bytes (0..255)", "--scale")
    _nothing_final(tmp_path / "out")
    later = _copy(tmp_path / "later")
    last = sorted(later.glob("*_T34VCL.tif"))[-1]
    _rewrite(last, lambda dn: np.clip(dn / 3000 * 255, 0, 255), dtype="uint8")
    one_line_error(_fill(later, tmp_path / "out2"), last.name, "bytes (0..255)")
    _nothing_final(tmp_path / "out2")


def test_a_no_data_mark_the_files_do_not_name_stops_with_the_value_to_pass(tmp_path, reference):
    """int16 scenes marking no data -9999 without a nodata tag: -9999 was read as reflectance -1 and written as
    DN 1 where no data should be ("0 pixels never observed"); now one line names the value to pass, and with it
    the fill equals the sample's."""
    folder = _copy(tmp_path / "marked", lambda dn: np.where(dn == 0, -9999, dn), dtype="int16")
    one_line_error(_fill(folder, tmp_path / "out"), "20210403_S2_T34VCL.tif", "-9999", "--nodata -9999")
    _nothing_final(tmp_path / "out")
    assert _fill(folder, tmp_path / "given", "--nodata", "-9999").exit_code == 0
    got = read_outputs(tmp_path / "given")
    assert len(got) == 24 and all(np.array_equal(got[k], reference[k]) for k in reference)


def test_scenes_that_mark_no_data_differently_are_each_read_with_their_own_nodata(tmp_path):
    """A folder gathered from two exporters: the later scenes mark no data 65535 (their nodata tag), the earlier
    ones 0. Each scene's own value is no data, so the fill equals the sample's (65535 was read as reflectance
    6.55 and spread into every date's fill)."""
    folder = _copy(tmp_path / "mixed")
    for path in sorted(folder.glob("*_T34VCL.tif"))[5:]:
        _rewrite(path, lambda data: np.where(data == 0, 65535, data), nodata=65535)
    fills_as_the_sample(folder, tmp_path)


def test_float_reflectance_scenes_beside_dn_scenes_are_each_read_with_their_own_scale(tmp_path):
    """A folder gathered from two exports: the later scenes float reflectance (NaN no data), the earlier DN.
    Each gets its own scale, so the fill equals the sample's (the floats were read as DN: reflectance 0.0001)."""
    folder = _copy(tmp_path / "mixed")
    for path in sorted(folder.glob("*_T34VCL.tif"))[5:]:
        _rewrite(path, lambda data: np.where(data == 0, np.nan, data.astype(np.float32) * np.float32(1e-4)),
                 dtype="float32", nodata=float("nan"))
    # The screen off: its thresholds would turn float rounding of the two decodings into a few flipped pixels.
    fills_as_the_sample(folder, tmp_path, "--no-screen")
    dry = runner.invoke(app, ["fill", str(folder), "--out", str(tmp_path / "dry"), "--dry-run", "-q"])
    assert "value x 0.0001 + 0 on 5 dates (2021-04-03..2021-05-21); value x 1 + 0 on 7 dates" in dry.output


def test_a_folder_with_nothing_observed_is_an_error_that_names_the_likely_mask_kind(tmp_path):
    cloudy = _copy(tmp_path / "cloudy", masks=lambda m: np.ones_like(m))
    one_line_error(_fill(cloudy, tmp_path / "o1"), "no pixel of any date is observed")
    _nothing_final(tmp_path / "o1")
    scl_like = _copy(tmp_path / "scl", masks=lambda m: np.where(m > 0, 9, 4))  # SCL classes in 'binary' files
    one_line_error(_fill(scl_like, tmp_path / "o2", "--mask-kind", "binary"), "--mask-kind scl")
    _nothing_final(tmp_path / "o2")


def test_probability_masks_named_as_binary_ones_stop_with_the_kind_to_pass(tmp_path):
    """Cloud probability (0..100) in files named like binary masks (``..._mask.tif``): read as binary, every pixel
    above 0 % was cloud and the fill filled 8 times the pixels it should have, silently. Now one line names the
    file and --mask-kind probability, with which the fill equals the sample's."""
    def probability(mask):  # clear pixels 0 %, or 5..24 % in a third of 20-px blocks (haze)
        rows, cols = np.indices(mask.shape[-2:])
        haze = np.where((rows // 20 + cols // 20) % 3 == 0, 5 + (rows + cols) % 20, 0)
        return np.where(mask > 0, 90, haze)

    folder = _copy(tmp_path / "prob", masks=probability)
    first_mask = sorted(folder.glob("*_mask.tif"))[0]
    one_line_error(_fill(folder, tmp_path / "o1"), first_mask.name, "cloud probability", "--mask-kind probability")
    _nothing_final(tmp_path / "o1")
    assert _fill(folder, tmp_path / "told", "--mask-kind", "probability").exit_code == 0
    assert _fill(SAMPLE, tmp_path / "plain").exit_code == 0  # its masks binary, as they are
    a, b = read_outputs(tmp_path / "told"), read_outputs(tmp_path / "plain")
    assert len(a) == 24 and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_date_without_any_observed_pixel_is_written_flagged_and_named(tmp_path, caplog):
    def hide_first(masks):  # called per file in name order: the first date's mask becomes all cloud
        hide_first.calls = getattr(hide_first, "calls", 0) + 1
        return np.ones_like(masks) if hide_first.calls == 1 else masks

    folder = _copy(tmp_path / "one", masks=hide_first)
    result = runner.invoke(app, ["fill", str(folder), "--out", str(tmp_path / "out"), "--method", "linear"])
    assert result.exit_code == 0, result.output
    assert "2021-04-03: no observed pixel" in result.output
    with rasterio.open(tmp_path / "out" / "20210403_filled_flags.tif") as src:
        flags = src.read(1)
    assert set(np.unique(flags)) <= {1, 255} and (flags == 1).any()


def test_checkpoints_with_nan_or_misfit_weights_are_refused_in_one_line(tmp_path):
    payload = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    broken = dict(payload, state_dict={**payload["state_dict"]})
    broken["state_dict"]["head.conv1.bias"] = torch.full_like(payload["state_dict"]["head.conv1.bias"], float("nan"))
    torch.save(broken, tmp_path / "nan.pth")
    misfit = dict(payload, state_dict={**payload["state_dict"]})
    misfit["state_dict"]["head.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(misfit, tmp_path / "misfit.pth")
    for name, word in (("nan.pth", "NaN or Inf"), ("misfit.pth", "do not fit")):
        one_line_error(runner.invoke(app, ["info", str(tmp_path / name)]), word)
        result = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(tmp_path / "o"), "--method", "utilise",
                                     "--checkpoint", str(tmp_path / name), "-q"])
        one_line_error(result, word)
    _nothing_final(tmp_path / "o")


@pytest.mark.parametrize("args, words", [
    (["--batch-size", "-1"], ["--batch-size"]),
    (["--network-workers", "0"], ["--network-workers", "1 or more"]),
    (["--time-window", "1"], ["--time-window", "at least 2"]),
    (["--scheduler", "foo"], ["--scheduler", "local:N"]),
    (["--scheduler", "tcp://127.0.0.1:9"], ["--scheduler", "no dask scheduler answered"]),
    (["--date-pattern", "("], ["--date-pattern", "regular expression"]),
    (["--cloud-threshold", "150"], ["--cloud-threshold", "0..100"]),
    (["--scale", "0"], ["--scale", "positive"]),
    (["--chip-size", "100"], ["--chip-size", "multiple of 8"]),
    (["--dtype", "int8"], ["--dtype"]),
])
def test_bad_options_give_one_line_and_write_nothing(tmp_path, args, words):
    one_line_error(_fill(SAMPLE, tmp_path / "out", *args), *words)
    _nothing_final(tmp_path / "out")


def test_an_output_folder_inside_the_input_is_refused(tmp_path):
    folder = _copy(tmp_path / "scenes")
    one_line_error(_fill(folder, folder / "filled"), "inside the input folder")
    assert not (folder / "filled").exists()


def test_a_rerun_with_other_options_redoes_the_outputs_and_an_identical_one_skips(tmp_path):
    out = tmp_path / "out"
    assert _fill(SAMPLE, out).exit_code == 0
    again = _fill(SAMPLE, out)
    assert again.exit_code == 0 and "nothing to do" in again.output
    other = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(out), "--method", "adjusted", "-q"])
    assert other.exit_code == 0 and "wrote 12 COGs" in other.output, other.output
    with rasterio.open(out / "20210403_filled.tif") as src:
        assert src.tags()["UTILISE_METHOD"] == "adjusted"
    buffered = _fill(SAMPLE, out, "--mask-buffer", "1")  # a mask option changes the pixels too
    assert "wrote 12 COGs" in buffered.output
    assert "nothing to do" in _fill(SAMPLE, out, "--mask-buffer", "1").output


def test_training_evaluation_and_simulation_mistakes_give_one_line(tmp_path, data):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [a.h5]\nlr: [1e-4\nepochs: 3\n")
    one_line_error(runner.invoke(app, ["train", str(bad), "--out", str(tmp_path / "r")]), "line 3", "YAML")
    for args, word in ((["--lr", "0"], "lr 0.0 must be"), (["--epochs", "0"], "epochs 0 must be")):
        result = runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(tmp_path / "r"), *args])
        one_line_error(result, word)
    result = runner.invoke(app, ["eval", "linear,lineer", str(data / "se_sim.h5"), "--out", str(tmp_path / "e")])
    one_line_error(result, "lineer", "linear, closest", "shipped")
    result = runner.invoke(app, ["simulate", str(data / "se.h5"), "--out", str(data / "se.h5")])
    one_line_error(result, "is the input dataset")


@pytest.mark.parametrize("panel_width", [0, 48])  # the whole width; 3 column panels, interrupted in the last
def test_an_interrupted_run_resumes_from_its_last_rows_and_ends_byte_identical(tmp_path, panel_width):
    from utilise_cli.fill import FillOptions, fill

    class ChipMean:  # a predictor whose output depends on where the chip is, so that blending shows
        name = "chip-mean"

        def __call__(self, reflectance, observed, days):
            seen = observed[:, :, None]
            total = np.where(seen, reflectance, 0).sum(axis=(-2, -1), keepdims=True)
            mean = total / np.maximum(seen.sum(axis=(-2, -1), keepdims=True), 1)
            return np.broadcast_to(mean, reflectance.shape).astype(np.float32)

    options = FillOptions(chip_size=16, overlap=4, batch_size=8, dtype="float32", panel_width=panel_width)
    whole = fill(SAMPLE, tmp_path / "whole", options, predictor=ChipMean())
    total = whole.chips_run + whole.chips_skipped
    assert total >= 150  # 13 chip rows: a scene of many stripes

    partials_before = []

    def interrupt(done: int, all_chips: int) -> None:  # a real SIGINT (Ctrl-C), landing wherever it lands
        if done >= 0.8 * all_chips:
            partials_before.append(len(list(out.glob(".*.partial.tif"))))
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "out"
    # Ctrl-C's own handler, whatever an earlier test or library set (a run without ../shared once saw no interrupt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            fill(SAMPLE, out, options, progress=interrupt, predictor=ChipMean())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not [p for p in out.glob("*.tif") if not p.name.startswith(".")]  # nothing under a final name
    # one panel: the COGs were built as the rows came, and their rows went into partial files at the interruption
    assert partials_before[0] == (0 if panel_width == 0 else 24)
    assert len(list(out.glob(".*.partial.tif"))) == 24 and (out / ".utilise-progress.json").is_file()
    resumed = fill(SAMPLE, out, options, predictor=ChipMean())
    assert resumed.chips_run + resumed.chips_skipped <= 0.3 * total
    assert len(resumed.outputs) == 12 and not list(out.glob(".*partial*"))
    for path in sorted(p for p in (tmp_path / "whole").glob("*.tif") if not p.name.startswith(".")):
        if (out / path.name).read_bytes() != path.read_bytes():  # say whether the pixels differ too
            with rasterio.open(path) as whole_file, rasterio.open(out / path.name) as resumed_file:
                a, b = whole_file.read(), resumed_file.read()
            differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
            raise AssertionError(f"{path.name}: not byte-identical; {int(differ.sum())} values differ, first at "
                                 f"{np.argwhere(differ)[:3].tolist()}")
    report = json.loads((out / "fill_report.json").read_text())
    assert report["filled_pixel_dates"] == whole.filled_pixels


def test_sigterm_stops_a_fill_as_ctrl_c_does_and_the_same_command_resumes(tmp_path, monkeypatch):
    # A batch system's time limit or `kill` sends SIGTERM: Python's default ends the process at once, with the rows
    # the fill holds lost. The CLI handles it as Ctrl-C: one line, exit 143, rows kept, the same command resumes.
    import utilise_cli.fill

    class Killed(Exception):
        pass

    def killed(signum, frame):  # where the CLI sets no handler of its own, the test fails here (not the process)
        raise Killed

    whole = _fill(SAMPLE, tmp_path / "whole", "--chip-size", "16", "--overlap", "4", "--dtype", "float32")
    assert whole.exit_code == 0, whole.output
    original = utilise_cli.fill.fill

    def fill_then_terminated(*args, progress, **kwargs):
        def progress_then_sigterm(done: int, total: int) -> None:
            progress(done, total)
            if done >= 0.6 * total:
                os.kill(os.getpid(), signal.SIGTERM)

        return original(*args, progress=progress_then_sigterm, **kwargs)

    previous = signal.signal(signal.SIGTERM, killed)
    try:
        monkeypatch.setattr(utilise_cli.fill, "fill", fill_then_terminated)
        out = tmp_path / "out"
        stopped = _fill(SAMPLE, out, "--chip-size", "16", "--overlap", "4", "--dtype", "float32")
        assert signal.getsignal(signal.SIGTERM) is killed  # the CLI's handler is gone after the command
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.exit_code == 143, stopped.output
    assert stopped.output.strip().splitlines()[-1].startswith("terminated (SIGTERM): finished outputs and the rows")
    _nothing_final(out)
    assert (out / ".utilise-progress.json").is_file()
    monkeypatch.setattr(utilise_cli.fill, "fill", original)
    resumed = _fill(SAMPLE, out, "--chip-size", "16", "--overlap", "4", "--dtype", "float32")
    assert resumed.exit_code == 0, resumed.output
    chips = [int(r.output.split(" chips run")[0].rsplit(" ", 1)[1]) for r in (whole, resumed)]
    assert chips[1] <= 0.5 * chips[0]  # only the chip rows below the kept rows ran again
    outputs = sorted(p.name for p in (tmp_path / "whole").glob("*.tif"))
    assert len(outputs) == 24 and sorted(p.name for p in out.glob("*.tif")) == outputs
    assert all((out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes() for name in outputs)


def test_an_interrupted_run_with_other_options_starts_again(tmp_path):
    from utilise_cli.fill import FillOptions, fill

    options = FillOptions(method="linear", chip_size=32, overlap=8)

    def interrupt(done: int, all_chips: int) -> None:
        if done >= 0.5 * all_chips:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fill(SAMPLE, tmp_path / "out", options, progress=interrupt)
    other = fill(SAMPLE, tmp_path / "out", FillOptions(method="adjusted", chip_size=32, overlap=8))
    reference = fill(SAMPLE, tmp_path / "ref", FillOptions(method="adjusted", chip_size=32, overlap=8))
    assert other.chips_run + other.chips_skipped == reference.chips_run + reference.chips_skipped
    a, b = read_outputs(tmp_path / "out"), read_outputs(tmp_path / "ref")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_fill_larger_than_the_memory_allowed_is_refused_before_reading(tmp_path):
    result = _fill(SAMPLE, tmp_path / "out", "--max-memory", "100")
    one_line_error(result, "needs about", "100 MB", "--chip-size")
    _nothing_final(tmp_path / "out")
    dry = runner.invoke(app, ["fill", str(SAMPLE), "--out", str(tmp_path / "o"), "--method", "linear", "--dry-run"])
    assert dry.exit_code == 0 and "MB of memory (" in dry.output and "available" in dry.output


def test_a_scene_of_another_place_is_refused_even_with_align(tmp_path):
    folder = _copy(tmp_path / "scenes")
    scene = sorted(folder.glob("*_T34VCL.tif"))[1]
    with rasterio.open(scene) as src:
        profile, data, names = src.profile, src.read(), src.descriptions
    profile.update(transform=src.transform @ rasterio.Affine.translation(10_000, 0))  # 200 km east at 20 m
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = names
    one_line_error(_fill(folder, tmp_path / "out", "--align"), scene.name, "does not overlap")
    _nothing_final(tmp_path / "out")


def test_a_cog_whose_tiles_hold_only_nodata_passes_the_completeness_check(tmp_path):
    # A scene at the edge of an orbit is mostly nodata: GDAL must still write those tiles, or every such fill
    # would be refused as incomplete.
    from rasterio.transform import from_origin

    from utilise_cli.cog import copy_to_cog, incomplete

    for dtype, nodata, predictor in (("uint16", 0, 2), ("float32", float("nan"), 3), ("uint8", 255, 2)):
        data = np.full((2, 1100, 1100), nodata, dtype)
        data[:, :200, :200] = 7
        partial = tmp_path / f".{dtype}.partial.tif"
        with rasterio.open(partial, "w", driver="GTiff", width=1100, height=1100, count=2, dtype=dtype,
                           nodata=nodata, tiled=True, blockxsize=256, blockysize=32, crs="EPSG:32634",
                           transform=from_origin(500000, 6500000, 10, 10)) as dst:
            dst.write(data)
        cog = copy_to_cog(partial, tmp_path / f"{dtype}.tif", predictor, "average")
        assert incomplete(cog) == ""
        with rasterio.open(cog) as src:
            assert src.overviews(1) and np.array_equal(src.read(), data, equal_nan=dtype == "float32")


@pytest.mark.parametrize("height, width", [(1025, 1025), (4100, 333)])
def test_a_cog_whose_overviews_round_down_passes_the_completeness_check(tmp_path, height, width):
    # Halved, 1025 rows make an overview of 512 (GDAL's and ours), which GDAL reports as factor 2: the check once
    # took 1025 / 2 rounded up for that level, looked for a second row of tiles and refused every fill of such a
    # raster. (4100 x 333: the third overview has 512 rows, not 4100 / 8 rounded up.) Built as a fill builds them,
    # and copied from a partial file by our writer (DEFLATE) and by GDAL (ZSTD).
    from rasterio.transform import from_origin

    from utilise_cli.cog import StripeWriter, copy_to_cog, incomplete

    data = np.random.default_rng(5).integers(1, 10000, (1, height, width), dtype=np.uint16)
    grid = dict(crs="EPSG:32634", transform=from_origin(500000, 6500000, 10, 10))
    streamed = StripeWriter(tmp_path / "streamed.tif", width=width, height=height, count=1, dtype="uint16",
                            descriptions=["B2"], streamed=True, **grid)
    for row in range(0, height, 96):
        streamed.write_rows(row, data[:, row:row + 96])
    cogs = [streamed.close()()]
    for compress in ("deflate", "zstd"):
        partial = tmp_path / f".{compress}.partial.tif"
        with rasterio.open(partial, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint16",
                           nodata=0, tiled=True, blockxsize=256, blockysize=32, **grid) as dst:
            dst.write(data)
        cogs.append(copy_to_cog(partial, tmp_path / f"{compress}.tif", 2, "average", compress))
    for cog in cogs:
        assert incomplete(cog) == "", cog.name
        with rasterio.open(cog) as src:
            assert len(src.overviews(1)) == (1 if height == 1025 else 3) and np.array_equal(src.read(), data)


@pytest.mark.parametrize("compress", ["deflate", "zstd"])
def test_a_cog_copied_with_an_uncompressed_temporary_file_equals_gdal_s_own_copy_at_every_level(tmp_path, compress):
    """copy_to_cog writes DEFLATE outputs with cog_writer and has GDAL copy ZSTD ones with the overviews'
    temporary file uncompressed (faster); either COG must be the one GDAL makes by default: same codec, same
    overviews, every level equal pixel for pixel."""
    import rasterio.shutil
    from rasterio.transform import from_origin

    from utilise_cli.cog import COG_LEVEL, copy_to_cog

    rng = np.random.default_rng(3)
    data = rng.integers(1, 10000, (4, 1100, 1300), dtype=np.uint16)
    data[:, 300:420, 500:800] = 0  # nodata, left out of the averages
    partial = tmp_path / ".out.partial.tif"
    with rasterio.open(partial, "w", driver="GTiff", width=1300, height=1100, count=4, dtype="uint16", nodata=0,
                       tiled=True, blockxsize=256, blockysize=32, crs="EPSG:32634",
                       transform=from_origin(500000, 6500000, 10, 10)) as dst:
        dst.write(data)
    rasterio.shutil.copy(partial, tmp_path / "gdal.tif", driver="COG", compress=compress, level=COG_LEVEL,
                         predictor=2, blocksize=512, overview_resampling="average")
    ours = copy_to_cog(partial, tmp_path / "ours.tif", 2, "average", compress)
    with rasterio.open(tmp_path / "gdal.tif") as gdal, rasterio.open(ours) as src:
        assert src.overviews(1) == gdal.overviews(1) == [2, 4]
        assert src.compression == gdal.compression and src.compression.value == compress.upper()
        assert np.array_equal(src.read(), data)
    for level in (0, 1):
        with rasterio.open(tmp_path / "gdal.tif", overview_level=level) as gdal, \
                rasterio.open(ours, overview_level=level) as src:
            assert np.array_equal(src.read(), gdal.read()), level


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a header cut short has no grid
def test_a_cog_copy_left_truncated_without_an_error_is_refused_and_nothing_gets_its_name(tmp_path, monkeypatch):
    # On a thread, GDAL can fail to write a COG without raising (a full disk: 5 of 47 fills copying on 2 threads).
    # Here every COG, however it is written (built as the rows come, by cog_writer or GDAL from a partial file), is
    # cut short after it was written, as those were.
    import rasterio.shutil

    import utilise_cli.cog
    from utilise_cli.cog import incomplete

    out = tmp_path / "out"
    assert _fill(SAMPLE, out).exit_code == 0
    cog = out / "20210403_filled.tif"
    assert incomplete(cog) == ""
    size = cog.stat().st_size
    # bytes kept: all but the last tile's repeated 4 bytes, all but part of that tile, half, the header alone
    for keep, says in ((size - 1, "bytes in a"), (size - 10, "bytes in a"), (size // 2, "bytes in a"), (300, "")):
        shutil.copy(cog, tmp_path / "cut.tif")
        with open(tmp_path / "cut.tif", "r+b") as f:
            f.truncate(keep)
        problem = incomplete(tmp_path / "cut.tif")
        assert problem and says in problem, (keep, problem)
    def cut_short(write):
        def written_then_cut(src, dst, *args, **options):
            write(src, dst, *args, **options)
            with open(dst, "r+b") as f:
                f.truncate(Path(dst).stat().st_size // 2)
        return written_then_cut

    build = utilise_cli.cog.CogBuilder.write

    def built_then_cut(builder, header, dst, *args):
        cut_short(lambda _, path: build(builder, header, path, *args))(None, dst)

    monkeypatch.setattr(utilise_cli.cog, "write_cog", cut_short(utilise_cli.cog.write_cog))
    monkeypatch.setattr(utilise_cli.cog.rasterio.shutil, "copy", cut_short(rasterio.shutil.copy))
    monkeypatch.setattr(utilise_cli.cog.CogBuilder, "write", built_then_cut)
    panels = ["--chip-size", "32", "--overlap", "8", "--panel-width", "64"]  # 2 column panels: partial files
    for options, folder in (([], "again"), (panels, "panels"), (["--compress", "zstd"], "zstd")):
        result = _fill(SAMPLE, tmp_path / folder, *options)
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]  # (GDAL warns too)
        assert len(errors) == 1 and "_filled" in errors[0] and "came out incomplete" in errors[0], result.output
        _nothing_final(tmp_path / folder)
        assert not list((tmp_path / folder).glob(".*.tif.partial"))  # the hidden copies are gone too


# 600k: the disk fills while rows are written. 1800k: the rows fit, the COGs laid out from them on 2 threads do not
# (1700k-1900k since the COGs are built as the rows come; the whole fill takes 1.9 MB), so a COG's writing is what
# hits the full disk (a fill that missed its failure would end "successfully" without it). The sample tiled to
# 512^2: the disk fills while rows are written (on the writing threads), long before the end. ZSTD: the rows go to
# GDAL's partial files, whose errors need not say the disk is full (a one-panel DEFLATE fill builds its COGs in
# scratch files of its own, whose errors do).
@pytest.mark.parametrize("threads, size, tiles, codec", [(1, "600k", 1, "deflate"), (2, "1800k", 1, "deflate"),
                                                         (4, "1000k", 4, "deflate"), (4, "1000k", 4, "zstd")])
def test_a_full_disk_is_one_line_and_leaves_no_half_written_output(tmp_path, monkeypatch, threads, size, tiles, codec):
    import subprocess

    import utilise_cli.cog

    monkeypatch.setattr(utilise_cli.cog, "COPY_THREADS", threads)  # (as far as there are cores)
    source = SAMPLE
    if tiles > 1:
        def tile(a):
            return np.tile(a, (1, tiles, tiles))[:, :128 * tiles, :128 * tiles]
        source = _copy(tmp_path / "tiled", transform=tile, masks=tile)
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        result = _fill(source, disk / "out", "--compress", codec)
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "no space left" in errors[0] and "free space" in errors[0]  # (GDAL warns too)
        for path in (disk / "out").glob("*.tif"):
            if not path.name.startswith("."):
                with rasterio.open(path) as src:  # whatever carries a final name is complete
                    src.read()
        assert not list((disk / "out").glob(".*partial*"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)
