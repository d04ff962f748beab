"""`utilise train` and `utilise eval` on real prepared data: run folder, resume, determinism, fair scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from utilise_cli.baselines import interpolate
from utilise_cli.cli import app
from utilise_cli.datasets import DatasetFile
from utilise_cli.evaluate import evaluate, load_method
from utilise_cli.metrics import psnr_from_rmse, series_metrics
from utilise_cli.network import load_model

from .conftest import shared_path

runner = CliRunner()


def test_train_writes_the_run_folder_and_resumes(data, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(run), "--set", "lr=1e-3", "-q"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "log.csv", "best.pth", "last.pth", "resume.pt",
                                                 "val_0001.png"}
    merged = yaml.safe_load((run / "config.yaml").read_text())
    assert merged["lr"] == 1e-3 and merged["batch_size"] == 2 and merged["milestones"] == [50, 100, 150, 200, 250]
    assert not any(Path(p).is_absolute() for key in ("train", "val", "masks") for p in merged[key])
    model = load_model(run / "best.pth")
    assert model.config.encoder_widths == (8, 8, 16) and model.metadata["bands"] == ["B2", "B3", "B4", "B8"]
    # a second run into the same folder must not silently overwrite it
    again = runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(run)])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(run), "--resume", "--epochs", "2",
                                  "--set", "lr=1e-3", "-q"])
    assert resumed.exit_code == 0, resumed.output
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[2].startswith("2,4,")
    assert load_model(run / "last.pth").metadata["epoch"] == 2


def test_a_residual_network_trains_from_its_baseline(data, tmp_path):
    network = "network={encoder_widths: [8, 8, 16], decoder_widths: [8, 8, 16], residual: adjusted, " \
              "output_activation: none}"
    run = tmp_path / "residual"
    result = runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(run), "--set", network, "-q"])
    assert result.exit_code == 0, result.output
    model = load_model(run / "last.pth")
    assert model.config.residual == "adjusted" and model.config.input_dim == 5
    # Two steps from a zero correction: the fill is the baseline's, within a little (0.004 reflectance on
    # average at the hidden pixels; an output without the baseline added is off by the reflectance itself).
    baseline, network = load_method("adjusted"), load_method(str(run / "last.pth"))
    with DatasetFile(data / "se_sim.h5") as simulated:
        item = next(iter(simulated))
        frames, gaps, days = item.series.frames, item.gaps[simulated.ratios[0]].mask, item.series.days
    hidden = gaps & ~np.isnan(frames).any(axis=1)
    correction = np.abs(network.predict(frames, gaps, days) - baseline.predict(frames, gaps, days))
    assert hidden.sum() > 10_000 and correction.transpose(1, 0, 2, 3)[:, hidden].mean() < 0.01


def test_the_same_config_trains_the_same_weights(data, tmp_path):
    for name in ("a", "b"):
        assert runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(tmp_path / name), "-q"]).exit_code == 0
    a, b = (torch.load(tmp_path / n / "last.pth", weights_only=True)["state_dict"] for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eval_scores_baselines_and_checkpoints_on_identical_pixels(data, tmp_path):
    checkpoint = shared_path("reference", "earthnet2021_seed0.pth")
    methods = [load_method("linear"), load_method("closest"), load_method(str(checkpoint))]
    results = evaluate(methods, data / "se_sim.h5")
    per = results["per_series"]
    counts = {(m, v): [{k: s[k]["pixels"] for k in s} for s in rows] for m, vs in per.items() for v, rows in vs.items()}
    assert len(set(json.dumps(c, sort_keys=True) for c in counts.values())) == 1
    # independent recomputation of the linear score from the stored masks
    with DatasetFile(data / "se_sim.h5") as f:
        item = f.read(f.names[0])
    target, gaps = item.series.frames, item.gaps["ratio_0.50"].mask
    valid = ~np.isnan(target).any(axis=1)
    assert counts[("linear", "raw")][0]["occluded"] == int((valid & gaps).sum()) > 0
    pred = interpolate("linear", np.nan_to_num(target), valid & ~gaps, item.series.days)
    diff = (np.moveaxis(pred, 1, -1)[valid & gaps] - np.moveaxis(target, 1, -1)[valid & gaps])
    expected = psnr_from_rmse(float(np.sqrt((diff.astype(np.float64) ** 2).mean())))
    assert per["linear"]["raw"][0]["occluded"]["psnr"] == pytest.approx(expected, abs=1e-6)
    # observed pixels: a baseline passes them through; the network's "kept" variant too
    assert per["linear"]["raw"][0]["observed"]["mae"] == 0
    assert per["earthnet2021_seed0.pth"]["kept"][0]["observed"]["mae"] == 0
    assert per["earthnet2021_seed0.pth"]["raw"][0]["observed"]["mae"] > 0


def test_eval_ignores_what_a_method_writes_where_the_target_has_no_data(data):
    class Scribble:  # linear interpolation, plus noise wherever there is no ground truth
        name, model, precision = "scribble", None, "fp32"

        def predict(self, target, gaps, days):
            pred = load_method("linear").predict(target, gaps, days)
            noise = np.random.default_rng(0).random(pred.shape, dtype=np.float32)
            return np.where(np.isnan(target), noise, pred)

    with DatasetFile(data / "se_sim.h5") as f:
        assert np.isnan(f.read(f.names[0]).series.frames).any()  # the series has no-data pixels to test with
    per = evaluate([load_method("linear"), Scribble()], data / "se_sim.h5")["per_series"]
    assert per["scribble"]["raw"] == per["linear"]["raw"]


def test_eval_cli_writes_json_markdown_and_plot(data, tmp_path):
    out = tmp_path / "res"
    result = runner.invoke(app, ["eval", "linear,closest", str(data / "se_sim.h5"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "metrics.json").read_text())["results"]
    assert scores["linear"]["raw"]["occluded"]["psnr"] > scores["closest"]["raw"]["occluded"]["psnr"] > 15
    assert "| linear |" in (out / "metrics.md").read_text() and (out / "metrics.png").stat().st_size > 5000
    bad = runner.invoke(app, ["eval", "linear", str(data / "se.h5"), "--out", str(out)])
    assert bad.exit_code == 2 and "utilise simulate" in bad.output


def test_metrics_match_their_definitions():
    rng = np.random.default_rng(0)
    y = rng.uniform(0.05, 0.5, (3, 4, 16, 16))
    p = y + 0.01
    sel = np.ones((3, 16, 16), bool)
    m = series_metrics(p, y, sel)
    assert m["mae"] == pytest.approx(0.01) and m["rmse"] == pytest.approx(0.01) and m["psnr"] == pytest.approx(40)
    assert series_metrics(y, y, sel)["ssim"] == pytest.approx(1.0) and series_metrics(y, y, sel)["sam"] < 1e-3
    assert series_metrics(2 * y, y, sel)["sam"] < 1e-3  # SAM ignores brightness
    assert m["pixels"] == 3 * 16 * 16


def test_gap_weight_weighs_gap_pixels_and_1_is_plain_l1():
    from utilise_cli.train import masked_loss

    pred, target = torch.zeros(1, 2, 1, 2, 2), torch.ones(1, 2, 1, 2, 2)
    target[0, 1] = 3.0  # frame 1 is off by 3, frame 0 by 1
    valid = torch.ones(1, 2, 2, 2, dtype=torch.bool)
    frames = torch.tensor([[True, True]])
    gaps = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    gaps[0, 1] = True
    assert masked_loss(pred, target, valid, frames).item() == pytest.approx(2.0)
    assert masked_loss(pred, target, valid, frames, gaps, 1.0).item() == pytest.approx(2.0)
    assert masked_loss(pred, target, valid, frames, gaps, 3.0).item() == pytest.approx((1 * 4 + 3 * 3 * 4) / 16)
    # padded frames do not count
    assert masked_loss(pred, target, valid, torch.tensor([[True, False]])).item() == pytest.approx(1.0)


def test_resuming_after_one_epoch_gives_the_weights_of_two_epochs_straight(data, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(straight), "--epochs", "2",
                               "-q"]).exit_code == 0
    assert runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(resumed), "--epochs", "1",
                               "-q"]).exit_code == 0
    assert runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(resumed), "--epochs", "2",
                               "--resume", "-q"]).exit_code == 0
    a, b = (torch.load(p / "last.pth", weights_only=True)["state_dict"] for p in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_stopped_between_its_checkpoint_and_its_state_resumes_as_if_straight(data, tmp_path):
    # A stop (Ctrl-C, SIGTERM) after an epoch's last.pth is written and before its resume.pt is: the state of the
    # epoch before must resume with the weights it was saved with, and the logs lose the epoch run again.
    straight, run = tmp_path / "straight", tmp_path / "run"
    args = [str(data / "tiny.yaml"), "-q"]
    assert runner.invoke(app, ["train", *args, "--out", str(straight), "--epochs", "2"]).exit_code == 0
    assert runner.invoke(app, ["train", *args, "--out", str(run), "--epochs", "1"]).exit_code == 0
    first_state = (run / "resume.pt").read_bytes()
    assert runner.invoke(app, ["train", *args, "--out", str(run), "--epochs", "2", "--resume"]).exit_code == 0
    (run / "resume.pt").write_bytes(first_state)  # epoch 2's last.pth and logs, epoch 1's state
    assert runner.invoke(app, ["train", *args, "--out", str(run), "--epochs", "2", "--resume"]).exit_code == 0
    a, b = (torch.load(p / "last.pth", weights_only=True)["state_dict"] for p in (straight, run))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r.split(",")[0] for r in (run / "log.csv").read_text().splitlines()] == ["epoch", "1", "2"]
    health = (run / "health.csv").read_text().splitlines()
    assert health == (straight / "health.csv").read_text().splitlines()
