"""Configuration of a U-TILISE network: everything needed to build it, nothing about its weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of U-TILISE.

    ``encoder_widths[i]`` is the channel count of encoder level ``i`` (level 0 = full resolution); the last
    entry is the bottleneck width, which the temporal encoder works on. ``levels = len(encoder_widths)``;
    H and W of the input must be multiples of ``2 ** (levels - 1)``.
    """

    input_dim: int = 4
    output_dim: int = 4
    encoder_widths: tuple[int, ...] = (64, 64, 64, 128)
    decoder_widths: tuple[int, ...] = (64, 64, 64, 128)
    n_head: int = 4
    d_k: int = 4
    n_groups: int = 4
    pad_value: float = 0.0
    positional_period: float = 1000.0
    dropout: float = 0.1
    output_activation: str = "sigmoid"
    # Not in the original: a baseline of baselines.METHODS ("linear", "adjusted") fills the gaps of the input,
    # one more input channel is 1 where a pixel was hidden, and the output is that filled series plus the
    # head's correction (see inference.network_input). The weights we ship use it; released checkpoints do not.
    residual: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_widths", tuple(int(w) for w in self.encoder_widths))
        object.__setattr__(self, "decoder_widths", tuple(int(w) for w in self.decoder_widths))
        if len(self.encoder_widths) != len(self.decoder_widths):
            raise ValueError("encoder_widths and decoder_widths must have the same number of levels")
        if len(self.encoder_widths) < 2:
            raise ValueError("U-TILISE needs at least 2 levels")
        if self.encoder_widths[-1] != self.decoder_widths[-1]:
            raise ValueError("the bottleneck width must be the same in encoder and decoder")
        if self.encoder_widths[-1] % self.n_head:
            raise ValueError("the bottleneck width must be divisible by n_head")
        for width in self.encoder_widths[:-1]:
            if width % self.n_head:
                raise ValueError("every encoder width must be divisible by n_head (attention groups)")
        if self.output_activation not in ("sigmoid", "none"):
            raise ValueError("output_activation must be 'sigmoid' or 'none'")
        if self.residual not in ("", "linear", "adjusted"):
            raise ValueError("residual must be '' (the original network), 'linear' or 'adjusted'")
        if self.residual and self.output_activation != "none":
            raise ValueError("a residual network adds its output to the interpolated input: set output_activation none")
        if self.residual and self.input_dim <= self.output_dim:
            raise ValueError("a residual network takes the output bands plus a gap channel: input_dim > output_dim")

    @property
    def levels(self) -> int:
        return len(self.encoder_widths)

    @property
    def auxiliary_inputs(self) -> int:
        """Input channels that are neither bands nor a residual network's gap channel (SAR: 2)."""
        return self.input_dim - self.output_dim - bool(self.residual)

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (2 ** (levels - 1))."""
        return 2 ** (self.levels - 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["encoder_widths"] = list(self.encoder_widths)
        data["decoder_widths"] = list(self.decoder_widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkConfig":
        known = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in data.items() if k in known})


