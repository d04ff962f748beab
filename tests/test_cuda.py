"""The CUDA path: the network and `fill` on a GPU give what they give on the CPU. Skipped without CUDA (CI has
none); `scripts/gpu_check.sh` runs these on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utilise_cli.fill import FillOptions, fill
from utilise_cli.inference import run_network
from utilise_cli.network import load_model

from .conftest import ROOT, read_outputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_reference_vectors_on_the_gpu(reference_dir):
    data = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    model = load_model(reference_dir / "earthnet2021_seed0.pth", device="cuda")
    y = run_network(model, data["x"], data["position_days"], "fp32")
    expected = data["y"].clip(0, 1)
    assert np.abs(y - expected).max() <= 1e-4  # fp32 on the GPU, TF32 off
    half = run_network(model, data["x"], data["position_days"], "auto")
    assert 0 < np.abs(half - expected).mean() < 0.005  # bf16 autocast: close, not identical


def test_fill_on_the_gpu_matches_the_cpu(tmp_path):
    options = dict(method="utilise", dtype="float32", regenerate_all=True)
    cpu = fill(ROOT / "sample_data", tmp_path / "cpu", FillOptions(device="cpu", precision="fp32", **options))
    gpu = fill(ROOT / "sample_data", tmp_path / "gpu", FillOptions(device="cuda", precision="fp32", **options))
    fill(ROOT / "sample_data", tmp_path / "auto", FillOptions(device="cuda", precision="auto", **options))
    assert gpu.chips_run == cpu.chips_run > 0
    a, b, c = (read_outputs(tmp_path / name) for name in ("cpu", "gpu", "auto"))
    for name in a:
        seen = ~np.isnan(a[name])
        assert np.abs(a[name][seen] - b[name][seen]).max() <= 1e-4, name
        assert -10 * np.log10(np.mean((a[name][seen] - c[name][seen]) ** 2) + 1e-20) >= 50, name
