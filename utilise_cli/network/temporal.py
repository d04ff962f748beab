"""Temporal part of U-TILISE: positional encoding of day of year and the attention encoder.

It runs at the bottleneck, on the sequence of T tokens (one per frame) of every bottleneck pixel.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def positional_encoding(days: torch.Tensor, dim: int, repeat: int, period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal encoding of positions.

    days: B x T (day of year, 1 January = 0) -> B x T x (dim * repeat). Entry j of each ``dim``-vector is
    sin (even j) or cos (odd j) of ``days / period ** (2 * (j // 2) / dim)``; the vector is tiled ``repeat`` times.
    """
    j = torch.arange(dim, device=days.device)
    denom = torch.pow(torch.tensor(period, dtype=torch.float64, device=days.device), 2 * (j // 2) / dim)
    angles = days.to(torch.float64)[..., None] / denom
    table = torch.where(j % 2 == 0, torch.sin(angles), torch.cos(angles)).to(torch.float32)
    return table.repeat(*([1] * (table.dim() - 1)), repeat)


class TemporalEncoder(nn.Module):
    """One pre-norm attention layer over time, with the values taken from the normalised tokens themselves.

    Each of ``n_head`` heads computes attention from small query/key projections (d_k per head) and
    averages its own group of ``width / n_head`` consecutive channels; there is no value or output
    projection. A feed-forward layer (GroupNorm, Linear, GELU) follows, both with residual sums.
    """

    def __init__(self, width: int, n_head: int, d_k: int, n_groups: int, dropout: float,
                 period: float = 1000.0) -> None:
        super().__init__()
        self.width, self.n_head, self.d_k, self.period = width, n_head, d_k, period
        self.norm1 = nn.GroupNorm(n_groups, width)
        self.query = nn.Linear(width, n_head * d_k, bias=False)
        self.key = nn.Linear(width, n_head * d_k, bias=False)
        self.norm2 = nn.GroupNorm(n_groups, width)
        self.mlp = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, days: torch.Tensor,
                pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: B x T x C x h x w; days: B x T; pad: B x T bool or None.

        Returns the encoded tokens (B x T x C x h x w) and attention n_head x B x T x T x h x w
        (query date, key date), rows summing to 1 over key dates.
        """
        b, t, c, h, w = tokens.shape
        # One sequence per bottleneck pixel: (B h w) x T x C.
        seq = tokens.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)
        pe = positional_encoding(days, c // self.n_head, self.n_head, self.period).to(seq.dtype)  # B x T x C
        seq = seq + pe.repeat_interleave(h * w, dim=0)

        z = self.norm1(seq.reshape(-1, c)).reshape(b * h * w, t, c)
        q = self.query(z).reshape(-1, t, self.n_head, self.d_k).transpose(1, 2)  # N x head x T x d_k
        k = self.key(z).reshape(-1, t, self.n_head, self.d_k).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_k)  # N x head x T x T
        if pad is not None:
            key_pad = pad.repeat_interleave(h * w, dim=0)[:, None, None, :]
            scores = scores.masked_fill(key_pad, -1000.0)
        attn = torch.softmax(scores, dim=-1)
        values = z.reshape(-1, t, self.n_head, c // self.n_head).transpose(1, 2)  # N x head x T x C/head
        out = self.dropout(attn) @ values
        seq = seq + self.dropout(out.transpose(1, 2).reshape(-1, t, c))

        ff = F.gelu(self.mlp(self.norm2(seq.reshape(-1, c)))).reshape(-1, t, c)
        seq = seq + self.dropout(ff)

        encoded = seq.reshape(b, h, w, t, c).permute(0, 3, 4, 1, 2)
        attention = attn.reshape(b, h, w, self.n_head, t, t).permute(3, 0, 4, 5, 1, 2)
        return encoded, attention
