"""Is a network alive? Live ReLU units and gradient norms per layer.

A ReLU unit (one output channel of a convolution that feeds a ReLU) is live on a batch when its
pre-activation is positive somewhere in it. A layer whose units are all dead passes no signal forward and no
gradient back; when that happens to the head's first convolution, the network's output is a constant and
nothing before the head can learn any more (the failure of our first shipped weights).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from .utilise import UTILISE


@dataclass
class Health:
    """live: layer -> share of its ReLU units (channels) that fire on the batch, 0..1.
    grad_norm: layer -> L2 norm of its parameters' gradients (empty when no backward pass was made)."""

    live: dict[str, float]
    grad_norm: dict[str, float]

    @property
    def head_live(self) -> float:
        return self.live.get("head.conv1", 0.0)

    @property
    def min_live(self) -> tuple[str, float]:
        name = min(self.live, key=self.live.__getitem__)
        return name, self.live[name]

    def dead_layers(self) -> list[str]:
        """Layers with no live unit, or (after a backward pass) with no gradient at all."""
        dead = {name for name, share in self.live.items() if share == 0.0}
        dead |= {name for name, norm in self.grad_norm.items() if norm == 0.0}
        return sorted(dead)

    def line(self) -> str:
        name, share = self.min_live
        return f"head live units {self.head_live:.0%}, least live layer {name} {share:.0%}"


def _relu_inputs(model: UTILISE) -> dict[str, nn.Module]:
    """The convolutions whose outputs go through a ReLU: all of them but a head's last one."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
            and not (name == "head.conv2" and not model.head.last_relu)}


def live_units(model: UTILISE, x: torch.Tensor, days: torch.Tensor) -> dict[str, float]:
    """Share of live units per ReLU-fed layer on the batch x B x T x C x H x W, days B x T."""
    fired: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            positive = (output.detach() > 0).transpose(0, 1).flatten(1).any(dim=1)  # per channel
            fired[name] = positive if name not in fired else fired[name] | positive
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in _relu_inputs(model).items()]
    try:
        with torch.no_grad():
            model(x, days)
    finally:
        for handle in handles:
            handle.remove()
    return {name: float(f.float().mean()) for name, f in fired.items()}


def gradient_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the current gradients, per module (weights and bias together); 0 where a gradient is None."""
    squares: dict[str, float] = defaultdict(float)
    for name, param in model.named_parameters():
        layer = name.rsplit(".", 1)[0]
        squares[layer] += 0.0 if param.grad is None else float(param.grad.detach().float().pow(2).sum())
    return {layer: value ** 0.5 for layer, value in squares.items()}


def check_health(model: UTILISE, x: torch.Tensor, days: torch.Tensor, with_gradients: bool = True) -> Health:
    """Live units on (x, days); with ``with_gradients``, the gradient norms left by the last backward pass."""
    return Health(live_units(model, x, days), gradient_norms(model) if with_gradients else {})
