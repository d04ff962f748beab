"""``utilise train``: fit U-TILISE on prepared datasets with gaps simulated anew for every sample.

The run folder holds config.yaml (the merged configuration), log.csv (one row per validation round), health.csv
(live ReLU units and gradient norm per layer and epoch; training stops when the head dies),
best.pth (the round with the highest validation PSNR on simulated gaps) and last.pth in our checkpoint
format, resume.pt (the weights with their optimizer, scheduler and random states) and val_EPOCH.png validation
quicklooks.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from .atomic import staged, write_text
from .errors import DatasetError, UtiliseError, first_line
from .datasets.masks import load_mask_libraries
from .datasets.torch_data import SequenceDataset, collate
from .inference import run_network
from .metrics import psnr_from_rmse
from .network import NetworkConfig, UTILISE, save_checkpoint
from .network.checkpoint import read_checkpoint, resolve_device
from .network.health import Health, check_health

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Training settings; defaults are the paper's (Adam 2e-4, L1, MultiStepLR, batch 3, 10 frames)."""

    train: list[str] = field(default_factory=list)       # dataset files from `utilise prepare`
    val: list[str] = field(default_factory=list)         # simulated files from `utilise simulate`
    val_ratio: str = "ratio_0.50"                        # which stored gaps of the validation files
    masks: list[str] = field(default_factory=list)       # extra real cloud-mask libraries
    network: dict[str, Any] = field(default_factory=dict)  # NetworkConfig fields
    bands: list[str] = field(default_factory=lambda: ["B2", "B3", "B4", "B8"])
    lr: float = 2e-4
    batch_size: int = 3
    max_frames: int = 10
    crop: int = 64                                       # training crop side, pixels
    ratio: float = 0.5                                   # ratio of masked frames (paper: 0.5)
    full_above: float = 0.9                              # gaps above this cover hide the whole frame
    gap_weight: float = 1.0                              # L1 weight of gap pixels vs observed ones (paper: 1)
    observed_weight: float = 1.0                         # L1 weight of pixels the input shows (paper: 1)
    loss: str = "l1"                                     # l1 (paper) or mse
    head_init: float = 0.01                              # residual networks: scale of the head's last conv at start
    epochs: int = 300
    steps_per_epoch: int = 100                           # batches per epoch
    milestones: list[int] = field(default_factory=lambda: [50, 100, 150, 200, 250])
    gamma: float = 0.5
    seed: int = 0
    device: str = "auto"
    max_minutes: float = 0.0                             # stop after the epoch that passes this (0 = no limit)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as err:
            raise UtiliseError(f"{path}: cannot read the training configuration ({err.strerror or err})") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or first_line(err)
            raise UtiliseError(f"{path}: not valid YAML{where} ({problem}); fix that line") from None
        if not isinstance(data, dict):
            raise UtiliseError(f"{path}: expected settings as key: value lines, got a {type(data).__name__}")
        data.update(overrides or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UtiliseError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(**data)
        for f in dataclasses.fields(cls):
            default, value = getattr(cls(), f.name), getattr(config, f.name)
            if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
                try:  # YAML reads 1e-3 (no dot) as text
                    setattr(config, f.name, type(default)(float(value)))
                except ValueError:
                    raise UtiliseError(f"{path}: {f.name} must be a number, got {value!r}") from None
        base = path.parent
        for key in ("train", "val", "masks"):
            setattr(config, key, [str((base / p).resolve()) if not Path(p).is_absolute() else p
                                  for p in getattr(config, key)])
        if not config.train:
            raise UtiliseError(f"{path}: no training datasets (set train: [files made by `utilise prepare`])")
        if config.loss not in LOSSES:
            raise UtiliseError(f"{path}: loss {config.loss!r} is not one of {', '.join(LOSSES)}")
        for name, ok, need in (("lr", config.lr > 0, "a positive learning rate, e.g. 2e-4"),
                               ("epochs", config.epochs >= 1, "1 or more"),
                               ("steps_per_epoch", config.steps_per_epoch >= 1, "1 or more"),
                               ("batch_size", config.batch_size >= 1, "1 or more")):
            if not ok:
                raise UtiliseError(f"{path}: {name} {getattr(config, name)} must be {need} (--{name.replace('_', '-')} "
                                   "or the configuration)")
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def portable_dict(self) -> dict[str, Any]:
        """to_dict with dataset and mask paths relative to the working directory, so that a saved config
        or checkpoint names no machine-specific folder."""
        data = self.to_dict()
        for key in ("train", "val", "masks"):
            data[key] = [os.path.relpath(p) for p in data[key]]
        return data


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' with a YAML value ('lr=1e-4', 'milestones=[10, 20]')."""
    if "=" not in text:
        raise UtiliseError(f"--set {text!r}: expected key=value, e.g. --set lr=1e-4")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


LOSSES = ("l1", "mse")


def masked_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, frames: torch.Tensor,
              gaps: torch.Tensor | None = None, gap_weight: float = 1.0, observed_weight: float = 1.0,
              kind: str = "l1") -> torch.Tensor:
    """Weighted mean |pred - target| (``kind`` l1) or (pred - target)^2 (mse) over the valid pixels of real
    (non-padded) frames; pixels in simulated gaps weigh ``gap_weight``, the others ``observed_weight``
    (l1, 1 and 1 = the paper's plain L1). pred, target B x T x C x H x W; masks B x T x H x W."""
    weight = (valid & frames[:, :, None, None]).to(pred.dtype)
    if gaps is not None and (gap_weight, observed_weight) != (1.0, 1.0):
        hidden = gaps.to(pred.dtype)
        weight = weight * (observed_weight + (gap_weight - observed_weight) * hidden)
    weight = weight.unsqueeze(2)
    error = (pred - target).abs() if kind == "l1" else (pred - target).square()
    return (error * weight).sum() / (weight.sum() * pred.shape[2]).clamp(min=1e-8)


@dataclass
class RoundResult:
    epoch: int
    step: int
    train_loss: float
    val_loss: float
    val_psnr_occluded: float
    lr: float
    seconds: float


def validate(model: UTILISE, dataset: SequenceDataset) -> tuple[float, float, dict[str, Any]]:
    """(L1 loss, PSNR on simulated-gap pixels) over whole validation series (mean per series), and the
    first series' arrays for a quicklook."""
    model.eval()
    losses, psnrs, first = [], [], {}
    for i in range(len(dataset.entries)):
        sample = dataset.sample(i, np.random.default_rng(0))
        x, y = sample["x"].numpy(), sample["y"].numpy()
        pred = run_network(model, x[None], sample["days"].numpy())[0]
        valid = sample["valid"].numpy()
        hidden = valid & sample["gaps"].numpy()
        err = np.abs(pred - y)
        losses.append(float(err.transpose(0, 2, 3, 1)[valid].mean()))
        if hidden.any():
            psnrs.append(psnr_from_rmse(float(np.sqrt(((pred - y) ** 2).transpose(0, 2, 3, 1)[hidden].mean()))))
        if not first:
            first = {"x": x, "pred": pred, "y": y, "gaps": sample["gaps"].numpy(), "name": sample["name"]}
    model.train()
    return float(np.mean(losses)), float(np.mean(psnrs)) if psnrs else math.nan, first


def save_quicklook(arrays: dict[str, Any], bands: list[str], path: Path, title: str) -> None:
    """Input / prediction / target strip of the frames of a validation series (true colour)."""
    from .pictures import rgb_indices, save_figure, triptych_figure

    x = np.where(arrays["gaps"][:, None], np.nan, arrays["x"][:, :len(bands)])
    rgb = rgb_indices(bands)
    fig = triptych_figure(x[:, rgb], arrays["pred"][:, rgb], arrays["y"][:, rgb], title)
    save_figure(fig, path)


def init_weights(model: UTILISE, head_scale: float = 1.0) -> None:
    """He (Kaiming) normal weights for ReLU and zero biases in every convolution; the head's last
    convolution scaled by ``head_scale``.

    torch's default initialisation shrinks the signal at each layer, so by the decoder the random biases
    dominate and about half of the ReLU units never fire on any input: dead from the first step. A residual
    network starts close to its baseline with a small ``head_scale``; not at 0, since with the last weights
    at 0 the head's first convolution gets no gradient at all."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu",
                                        mode="fan_in" if isinstance(module, nn.Conv2d) else "fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        model.head.conv2.weight.mul_(head_scale)


def _log_health(path: Path, epoch: int, health: Health) -> None:
    """One row per layer: epoch, layer, share of live ReLU units, gradient norm of the last step."""
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["epoch", "layer", "live_units", "grad_norm"])
        for layer in sorted(set(health.live) | set(health.grad_norm)):
            live = health.live.get(layer)
            writer.writerow([epoch, layer, "" if live is None else f"{live:.4f}",
                             f"{health.grad_norm.get(layer, 0.0):.4e}"])


def _log_row(path: Path, row: RoundResult) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow([f.name for f in dataclasses.fields(row)])
        writer.writerow(dataclasses.astuple(row))


def _drop_rounds_after(path: Path, epoch: int) -> None:
    """Keep a log's header and its rows of epochs up to ``epoch``: a resumed run runs the later ones again."""
    if path.exists():
        header, *rows = path.read_text().splitlines(keepends=True)
        kept = [r for r in rows if r.split(",", 1)[0].isdigit() and int(r.split(",", 1)[0]) <= epoch]
        write_text(path, "".join([header, *kept]))


def train(config: TrainConfig, run_dir: str | os.PathLike, resume: bool = False,
          progress: Callable[[int, int, float], None] | None = None) -> list[RoundResult]:
    """Train and write the run folder (see module docstring). Returns one result per epoch run here."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    state_path = run / "resume.pt"
    if not resume and (run / "last.pth").exists():
        raise UtiliseError(f"{run}: holds a run already; pass --resume to continue it or choose another --out")
    (run / "config.yaml").write_text(yaml.safe_dump(config.portable_dict(), sort_keys=False))

    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    library = load_mask_libraries(config.masks)
    residual = str(config.network.get("residual", ""))
    train_set = SequenceDataset(config.train, crop=config.crop, max_frames=config.max_frames, augment=True,
                                ratio=config.ratio, library=library, full_above=config.full_above,
                                samples=config.steps_per_epoch * config.batch_size, seed=config.seed,
                                residual=residual)
    val_set = SequenceDataset(config.val, ratio_key=config.val_ratio, max_frames=0,
                              residual=residual) if config.val else None
    if val_set is not None and any(config.val_ratio not in e.gaps for e in val_set.entries):
        raise DatasetError(f"{config.val}: no stored gaps {config.val_ratio}; pass files made by `utilise simulate`")
    channels = train_set.entries[0].series.frames.shape[1]
    net = NetworkConfig.from_dict({"input_dim": channels + bool(residual), "output_dim": channels, **config.network})
    model = UTILISE(net, {"bands": config.bands}).to(device)
    init_weights(model, config.head_init if residual else 1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestones, gamma=config.gamma)
    epoch, step, best, elapsed = 0, 0, math.inf, 0.0
    if resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        # The weights the state was saved with: last.pth is an epoch ahead where a run stopped between the two.
        model.load_state_dict(state["model"] if "model" in state else read_checkpoint(run / "last.pth")[1])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, step, best, elapsed = state["epoch"], state["step"], state["best"], state["elapsed"]
        train_set.rng.bit_generator.state = state["data_rng"]
        torch.set_rng_state(state["torch_rng"])
        for name in ("log.csv", "health.csv"):
            _drop_rounds_after(run / name, epoch)
        log.info("resuming %s at epoch %d (step %d)", run, epoch, step)

    loader = DataLoader(train_set, batch_size=config.batch_size, collate_fn=collate, num_workers=0)
    results = []
    started = time.perf_counter() - elapsed
    model.train()
    while epoch < config.epochs:
        losses = []
        for batch in loader:
            x, y = batch["x"].to(device), batch["y"].to(device)
            pred = model(x, batch["days"].to(device))
            loss = masked_loss(pred, y, batch["valid"].to(device), batch["frames"].to(device),
                             batch["gaps"].to(device), config.gap_weight, config.observed_weight, config.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.item())
            if progress:
                progress(epoch, step, losses[-1])
        epoch += 1
        scheduler.step()
        health = check_health(model, x, batch["days"].to(device))
        _log_health(run / "health.csv", epoch, health)
        val_loss, val_psnr, arrays = validate(model, val_set) if val_set else (float(np.mean(losses)), math.nan, {})
        row = RoundResult(epoch, step, float(np.mean(losses)), val_loss, val_psnr, optimizer.param_groups[0]["lr"],
                          time.perf_counter() - started)
        results.append(row)
        _log_row(run / "log.csv", row)
        meta = {"epoch": epoch, "step": step, "val_loss": val_loss, "val_psnr_occluded": val_psnr,
                "train_config": config.portable_dict(), "bands": config.bands}
        # Gaps are what the network is for: keep the round that fills them best (PSNR), else the lowest loss.
        score = -val_psnr if math.isfinite(val_psnr) else val_loss
        if score < best:
            best = score
            save_checkpoint(model, run / "best.pth", meta)
        save_checkpoint(model, run / "last.pth", meta)
        with staged(state_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch,
                        "step": step, "best": best, "elapsed": row.seconds,
                        "data_rng": train_set.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, tmp)
        if arrays:
            save_quicklook(arrays, config.bands, run / f"val_{epoch:04d}.png", f"epoch {epoch}: {arrays['name']}, "
                           f"PSNR on gaps {val_psnr:.2f} dB")
        log.info("epoch %d step %d train %.4f val %.4f psnr(gaps) %.2f dB %.0f s; %s", epoch, step, row.train_loss,
                 val_loss, val_psnr, row.seconds, health.line())
        if health.head_live == 0.0:
            log.warning("epoch %d: the head's ReLU units are all dead, so the output no longer depends on the "
                        "input and nothing before the head gets gradient; stopping (see %s). Lower lr, or weigh "
                        "observed pixels less (observed_weight)", epoch, run / "health.csv")
            break
        if config.max_minutes and row.seconds > config.max_minutes * 60:
            log.info("time budget of %.0f min reached after epoch %d", config.max_minutes, epoch)
            break
    return results
