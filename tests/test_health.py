"""A network that cannot die silently: live units and gradients of the shipped weights and of a training run."""

from __future__ import annotations

import csv

import numpy as np
import torch
from typer.testing import CliRunner

from utilise_cli.cli import app
from utilise_cli.cube import open_folder, read_rows
from utilise_cli.inference import model_input
from utilise_cli.network import NetworkConfig, UTILISE, load_model
from utilise_cli.network.health import check_health
from utilise_cli.train import init_weights
from utilise_cli.weights import DEFAULT_WEIGHTS

from .conftest import ROOT

runner = CliRunner()


def _sample_chips(model: UTILISE, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two real chips of the sample with their cloud masks: network input, days, target B x T x C x H x W."""
    cube = open_folder(ROOT / "sample_data", ["B2", "B3", "B4", "B8"])
    refl, observed = read_rows(cube, 0, size)
    chips = np.stack([refl[..., :size], refl[..., size:2 * size]])
    seen = np.stack([observed[..., :size], observed[..., size:2 * size]])
    days = np.asarray(cube.days, np.float32)
    x = model_input(model, chips, ~seen, days)
    target = np.nan_to_num(chips)
    return torch.from_numpy(x), torch.from_numpy(np.stack([days, days])), torch.from_numpy(target)


def test_the_shipped_network_is_alive_on_real_chips():
    model = load_model(DEFAULT_WEIGHTS)
    model.train()
    x, days, target = _sample_chips(model)
    (model(x, days) - target).abs().mean().backward()
    health = check_health(model, x, days)
    assert health.head_live > 0.5, health.line()
    assert not health.dead_layers(), health.dead_layers()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_dead_head_is_seen():
    model = load_model(DEFAULT_WEIGHTS)
    with torch.no_grad():  # the failure of the first shipped weights: every head unit below zero
        model.head.conv1.bias.fill_(-1e3)
    x, days, target = _sample_chips(model)
    model.train()
    (model(x, days) - target).abs().mean().backward()
    health = check_health(model, x, days)
    assert health.head_live == 0.0 and "head.conv1" in health.dead_layers()
    assert health.grad_norm["stem.conv1"] == 0.0  # nothing before the head learns any more


def test_he_initialisation_leaves_the_decoder_alive():
    config = NetworkConfig(input_dim=5, output_dim=4, encoder_widths=(32, 32, 32, 64),
                           decoder_widths=(32, 32, 32, 64), residual="adjusted", output_activation="none")
    torch.manual_seed(0)
    default, ours = UTILISE(config), UTILISE(config)
    init_weights(ours, 0.01)
    x, days, _ = _sample_chips(ours)
    live_default, live_ours = (check_health(m, x, days, with_gradients=False).live for m in (default, ours))
    decoder = [k for k in live_ours if k.startswith(("decoder", "head"))]
    assert min(live_ours[k] for k in decoder) > min(live_default[k] for k in decoder)
    assert min(live_ours[k] for k in decoder) >= 0.5


def test_training_a_residual_network_stays_alive_and_logs_its_health(data, tmp_path):
    network = "network={encoder_widths: [8, 8, 16], decoder_widths: [8, 8, 16], residual: adjusted, " \
              "output_activation: none}"
    run = tmp_path / "alive"
    result = runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(run), "--set", network,
                                 "--set", "observed_weight=0", "--set", "steps_per_epoch=6", "--epochs", "2",
                                 "--lr", "2e-4", "-q"])
    assert result.exit_code == 0, result.output
    with open(run / "health.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["epoch"] for r in rows} == {"1", "2"}
    head = [float(r["live_units"]) for r in rows if r["layer"] == "head.conv1"]
    assert len(head) == 2 and min(head) > 0
    assert all(float(r["grad_norm"]) > 0 for r in rows)


def test_training_stops_when_the_head_dies(data, tmp_path):
    network = "network={encoder_widths: [8, 8, 16], decoder_widths: [8, 8, 16], residual: adjusted, " \
              "output_activation: none}"
    run = tmp_path / "dying"
    # lr 0.5 kills every ReLU of the head within one epoch
    result = runner.invoke(app, ["train", str(data / "tiny.yaml"), "--out", str(run), "--set", network,
                                 "--epochs", "5", "--lr", "0.5"])
    assert result.exit_code == 0, result.output
    assert "dead" in result.output
    assert len((run / "log.csv").read_text().splitlines()) < 6  # stopped before epoch 5
