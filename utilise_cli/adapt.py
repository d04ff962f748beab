"""Test-time adaptation: fine-tune the network on the scene it is about to fill.

U-TILISE learns by hiding clear pixels under real cloud masks and reconstructing them; a user's scene holds
both, for that very place. Each step takes random crops and windows of dates of the scene, hides observed
pixels of half of the dates under the scene's own masks (shifted copies, as in self-validation), and trains
on the hidden pixels only (their truth is known). Pixels passed as not observed are never an input nor a
target, so pixels held out for validation stay honest. Deterministic on CPU for a given seed.

Shapes: reflectance T x C x H x W (0..1, anything where not observed), observed T x H x W (True = valid,
cloud-free), days T (day of year).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .inference import network_input
from .network import UTILISE
from .train import masked_loss
from .validation import MIN_MASK_COVER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptOptions:
    steps: int = 100  # optimiser steps
    lr: float = 1e-4  # Adam; half the shipped training's
    crop: int = 48  # crop side, pixels
    batch_size: int = 4  # crops per step
    max_frames: int = 10  # dates per crop window
    seed: int = 0
    max_seconds: float = 0.0  # stop after this much wall time (0 = no limit)


def _sample(reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray, shapes: list[np.ndarray],
            options: AdaptOptions, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One training crop: (target T' x C x s x s, known T' x s x s, gaps T' x s x s, days T')."""
    t, _, h, w = reflectance.shape
    frames = min(t, options.max_frames)
    start = int(rng.integers(0, t - frames + 1))
    size = min(options.crop, h, w)
    y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    window = (slice(start, start + frames), slice(y0, y0 + size), slice(x0, x0 + size))
    known = observed[window]
    target = reflectance[window[0], :, window[1], window[2]]
    gaps = np.zeros_like(known)
    for f in rng.choice(frames, size=math.ceil(0.5 * frames), replace=False):
        shape = shapes[int(rng.integers(len(shapes)))]
        rolled = np.roll(shape, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))
        gaps[f] = rolled[y0:y0 + size, x0:x0 + size] & known[f]
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    arrays = []
    for a in (target, known, gaps):
        a = np.rot90(a, k, axes=(-2, -1))
        arrays.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return (*arrays, days[window[0]])


def adapt(model: UTILISE, reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray,
          options: AdaptOptions = AdaptOptions(), progress: Callable[[int, int], None] | None = None) -> UTILISE:
    """A copy of ``model`` fine-tuned on the scene (see module docstring); ``model`` itself is untouched.
    Returns the copy unchanged (in eval mode) when the scene has no mask shapes or too few dates to learn from."""
    tuned = copy.deepcopy(model)
    t = observed.shape[0]
    cover = 1.0 - observed.reshape(t, -1).mean(axis=1)
    shapes = [~observed[i] for i in range(t) if cover[i] >= MIN_MASK_COVER]
    if not shapes or (cover < 1).sum() < 2:
        return tuned.eval()
    rng = np.random.default_rng(options.seed)
    torch.manual_seed(options.seed)
    device = next(tuned.parameters()).device
    clean = np.nan_to_num(reflectance).astype(np.float32)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=options.lr)
    residual = tuned.config.residual
    tuned.train()
    started = time.perf_counter()
    for step in range(options.steps):
        batch = [_sample(clean, observed, days, shapes, options, rng) for _ in range(options.batch_size)]
        x = np.stack([network_input(np.where(k[:, None] & ~g[:, None], y, np.nan), g | ~k, d, residual)
                      for y, k, g, d in batch])
        y, known, gaps, d = (np.stack(parts) for parts in zip(*batch))
        frames = torch.ones(d.shape, dtype=torch.bool, device=device)
        pred = tuned(torch.from_numpy(x).to(device), torch.from_numpy(d.astype(np.float32)).to(device))
        loss = masked_loss(pred, torch.from_numpy(y).to(device), torch.from_numpy(known).to(device), frames,
                           torch.from_numpy(gaps).to(device), gap_weight=1.0, observed_weight=0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress:
            progress(step + 1, options.steps)
        if options.max_seconds and time.perf_counter() - started > options.max_seconds:
            log.info("adaptation stopped at its time cap after %d of %d steps", step + 1, options.steps)
            break
    return tuned.eval()
