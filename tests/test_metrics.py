"""The paper's metrics against independent derivations: SSIM by hand with a 5 x 5 Gaussian window, a known
spectral angle, PSNR from RMSE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import correlate

from utilise_cli.metrics import psnr_from_rmse, sam, series_metrics, ssim_map


def _ssim_by_hand(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM per pixel of one image pair: 5 x 5 Gaussian (sigma 1.5) local statistics, mirrored borders,
    C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1, clipped to [0, 1]."""
    g = np.exp(-np.arange(-2, 3) ** 2 / (2 * 1.5 ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def local(v):
        return correlate(v, window, mode="mirror")

    mx, my = local(x), local(y)
    vx, vy, cxy = local(x * x) - mx ** 2, local(y * y) - my ** 2, local(x * y) - mx * my
    c1, c2 = (0.01 * 1) ** 2, (0.03 * 1) ** 2
    return np.clip((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)), 0, 1)


def test_ssim_matches_a_hand_computation_on_a_noisy_pair():
    rng = np.random.default_rng(0)
    y = np.cumsum(np.cumsum(rng.normal(0, 0.01, (2, 3, 40, 48)), axis=-1), axis=-2) * 0.05 + 0.2
    x = y + rng.normal(0, 0.02, y.shape)  # a noisy estimate: SSIM well inside (0, 1)
    ours = ssim_map(x, y)
    for t in range(2):
        for c in range(3):
            np.testing.assert_allclose(ours[t, c], _ssim_by_hand(x[t, c], y[t, c]), atol=1e-10)
    assert 0.05 < ours.mean() < 0.95


def test_spectral_angle_is_in_degrees():
    target = np.zeros((1, 4, 1, 2))
    pred = np.zeros((1, 4, 1, 2))
    target[0, 0] = 1.0
    pred[0, :2, 0, 0] = 1.0  # 45 degrees from the target
    pred[0, 0, 0, 1] = 2.0  # the same direction: 0 degrees
    assert sam(pred, target, np.ones((1, 1, 2), bool)) == pytest.approx(22.5)


def test_psnr_of_a_known_error():
    target = np.zeros((1, 2, 4, 4))
    pred = target + 0.01
    scores = series_metrics(pred, target, np.ones((1, 4, 4), bool))
    assert scores["rmse"] == pytest.approx(0.01) and scores["psnr"] == pytest.approx(40.0)
    assert psnr_from_rmse(0.1) == pytest.approx(20.0) and math.isinf(psnr_from_rmse(0.0))
