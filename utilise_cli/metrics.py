"""Image-series metrics as the U-TILISE paper reports them (docs/EVALUATION in ../shared).

Every function takes one series: prediction and target T x C x H x W (reflectance 0..1) and a T x H x W
boolean selection of the pixels that count. Metrics are computed per series; averaging over series is
the caller's job (equal weight per series).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2


def _selected(pred: np.ndarray, target: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N x C values of the selected pixels."""
    p = np.moveaxis(pred, 1, -1)[sel]
    y = np.moveaxis(target, 1, -1)[sel]
    return p.astype(np.float64), y.astype(np.float64)


def mae(pred: np.ndarray, target: np.ndarray, sel: np.ndarray) -> float:
    p, y = _selected(pred, target, sel)
    return float(np.abs(p - y).mean()) if p.size else math.nan


def rmse(pred: np.ndarray, target: np.ndarray, sel: np.ndarray) -> float:
    p, y = _selected(pred, target, sel)
    return float(np.sqrt(((p - y) ** 2).mean())) if p.size else math.nan


def psnr_from_rmse(value: float) -> float:
    """PSNR in dB for data range 1."""
    return math.inf if value == 0 else 20 * math.log10(1.0 / value)


def sam(pred: np.ndarray, target: np.ndarray, sel: np.ndarray) -> float:
    """Mean spectral angle in degrees over the selected pixels (pixels with a zero spectrum skipped)."""
    p, y = _selected(pred, target, sel)
    norms = np.linalg.norm(p, axis=1) * np.linalg.norm(y, axis=1)
    ok = norms > 0
    if not ok.any():
        return math.nan
    cos = np.clip((p[ok] * y[ok]).sum(axis=1) / norms[ok], -1, 1)
    return float(np.degrees(np.arccos(cos)).mean())


def _gaussian_kernel(size: int = 5, sigma: float = 1.5) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """SSIM per pixel of every frame and channel (5 x 5 Gaussian window, sigma 1.5, data range 1,
    mirrored borders), clipped to [0, 1]. T x C x H x W -> T x C x H x W."""
    t, c, h, w = pred.shape
    x = torch.from_numpy(pred.astype(np.float64)).reshape(t * c, 1, h, w)
    y = torch.from_numpy(target.astype(np.float64)).reshape(t * c, 1, h, w)
    kernel = _gaussian_kernel()

    def blur(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(v, (2, 2, 2, 2), mode="reflect"), kernel)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    value = ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((mx ** 2 + my ** 2 + SSIM_C1) * (vx + vy + SSIM_C2))
    return value.clamp(0, 1).reshape(t, c, h, w).numpy()


def series_metrics(pred: np.ndarray, target: np.ndarray, sel: np.ndarray,
                   ssim: np.ndarray | None = None) -> dict[str, float]:
    """MAE, RMSE, PSNR (dB), SAM (degrees), SSIM and the pixel-date count of one series over the selected pixels.

    ``ssim`` is the series' precomputed :func:`ssim_map` (computed here when None)."""
    if not sel.any():
        return {"mae": math.nan, "rmse": math.nan, "psnr": math.nan, "ssim": math.nan, "sam": math.nan, "pixels": 0}
    if ssim is None:
        ssim = ssim_map(pred, target)
    error = rmse(pred, target, sel)
    return {"mae": mae(pred, target, sel), "rmse": error, "psnr": psnr_from_rmse(error),
            "ssim": float(np.moveaxis(ssim, 1, -1)[sel].mean()), "sam": sam(pred, target, sel),
            "pixels": int(sel.sum())}
