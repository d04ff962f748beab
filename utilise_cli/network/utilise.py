"""The U-TILISE network: per-frame U-Net encoder, temporal attention at the bottleneck, and a decoder
whose skip connections are averaged over time with the bottleneck attention (``att_group``).

Shapes: x is B x T x C_in x H x W (reflectance 0..1, occluded pixels set to 1), days is B x T (day of
year, 1 January = 0); the output is B x T x C_out x H x W. A frame whose values all equal ``pad_value``
and whose day is 0 is temporal padding: it is skipped and its output is exactly 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputShapeError
from .blocks import DoubleConv, DownBlock, UpBlock
from .config import NetworkConfig
from .temporal import TemporalEncoder


# The resized attention's size at most, for as many rows of the map as fit (one at least): a 128-px chip's whole
# map at once, as before, up to 16 dates in float32 and 22 in bf16 (every date decoded). 70 dates in bf16: a
# pass's peak +1802 -> +890 MB, 0.80 s either way (2-core AMD EPYC).
AGGREGATE_BYTES = 64 << 20


def padding_mask(x: torch.Tensor, days: torch.Tensor, pad_value: float) -> torch.Tensor:
    """B x T bool: True where a frame is temporal padding (all values == pad_value and day == 0)."""
    return (x == pad_value).flatten(2).all(dim=2) & (days == 0)


def resize_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """n_out x n_in matrix that resizes one axis like F.interpolate(mode="bilinear", align_corners=False)
    when enlarging and like F.adaptive_avg_pool2d when shrinking."""
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    if n_out >= n_in:
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = src - lo
        matrix[torch.arange(n_out), lo] += 1 - frac
        matrix[torch.arange(n_out), hi] += frac
    else:
        for i in range(n_out):
            start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
            matrix[i, start:end] = 1.0 / (end - start)
    return matrix.to(dtype=dtype, device=device)


def aggregate_skip(attention: torch.Tensor, skip: torch.Tensor, pad: torch.Tensor | None,
                   queries: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Average an encoder map over time with the bottleneck attention, one head per channel group.

    attention: G x B x T x T x h x w (query date, key date); skip: B x T x C x H x W with C divisible by G;
    queries: per chip, the query dates wanted (None: every date). Returns N x C x H x W, the wanted frames in
    (chip, date) order (N = B x T for every date), stored channels-last (the layout the following convolution
    wants).
    """
    g, b, t, _, h, w = attention.shape
    height, width = skip.shape[-2:]
    c = skip.shape[2]
    if pad is not None:
        # Padded key dates contribute nothing; the rows are intentionally not renormalised.
        # (Resizing is linear per key date, so masking before it is the same as after.)
        attention = attention * (~pad).to(attention.dtype)[None, :, None, :, None, None]
    rows = resize_matrix(h, height, attention.dtype, attention.device)
    cols = resize_matrix(w, width, attention.dtype, attention.device)
    # The skip map is channels-last (physically B x T x H x W x C), so each chip is read in place through a
    # strided view.
    frames_cl = skip.flatten(0, 1)
    if not frames_cl.is_contiguous(memory_format=torch.channels_last):
        skip = frames_cl.contiguous(memory_format=torch.channels_last).reshape(skip.shape)
    sizes = [t] * b if queries is None else [len(q) for q in queries]
    out = skip.new_empty((sum(sizes), height, width, c))
    cg, start = c // g, 0
    for i, q in enumerate(sizes):
        chip = attention[:, i] if queries is None else attention[:, i, queries[i]]  # G x q x T x h x w
        small = chip.permute(3, 4, 0, 1, 2).reshape(h, w, g * q * t)
        frames = skip[i]
        # The attention resized to the map is H x W x G x q x T: a band of rows at a time keeps it within
        # AGGREGATE_BYTES, where the whole map grew with T^2 (70 dates, a 128-px chip in bf16: 0.64 GB at once).
        band = max(1, AGGREGATE_BYTES // max(1, width * g * q * t * attention.element_size()))  # q = 0: none
        for y0 in range(0, height, band):
            y1 = min(y0 + band, height)
            # Resized as two small matrix products, which leaves the result laid out H x W x (G q T).
            att = torch.einsum("Yy,yxk->Yxk", rows[y0:y1], small)
            att = torch.einsum("Xx,Yxk->YXk", cols, att).reshape((y1 - y0) * width * g, q, t)
            # One (query x key) @ (key x channel) product per pixel and head.
            keys = frames.as_strided(((y1 - y0) * width * g, t, cg), (cg, frames.stride(0), 1),
                                     frames.storage_offset() + y0 * frames.stride(-2))
            prod = torch.bmm(att, keys).reshape(y1 - y0, width, g, q, cg)
            out[start:start + q, y0:y1] = prod.permute(3, 0, 1, 2, 4).reshape(q, y1 - y0, width, c)
        start += q
    return out.permute(0, 3, 1, 2)


class UTILISE(nn.Module):
    """U-TILISE (Stucker, Sainte Fare Garnot, Schindler, IEEE TGRS 2023) for any number of levels and widths."""

    def __init__(self, config: NetworkConfig, metadata: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self.metadata: dict[str, Any] = dict(metadata or {})
        enc, dec = config.encoder_widths, config.decoder_widths
        self.stem = DoubleConv(config.input_dim, enc[0], enc[0])
        self.encoder = nn.ModuleList(DownBlock(enc[i], enc[i + 1]) for i in range(config.levels - 1))
        self.temporal = TemporalEncoder(enc[-1], config.n_head, config.d_k, config.n_groups,
                                        config.dropout, config.positional_period)
        # decoder[i] goes from level L-1-i to level L-2-i (bottleneck upwards).
        self.decoder = nn.ModuleList(
            UpBlock(dec[level + 1], dec[level], enc[level]) for level in reversed(range(config.levels - 1))
        )
        self.head = DoubleConv(dec[0], dec[0], config.output_dim, last_relu=False)
        self.to(memory_format=torch.channels_last)

    def check_input(self, x: torch.Tensor, days: torch.Tensor) -> None:
        """Raise InputShapeError with a sentence if x / days cannot go through this network."""
        cfg = self.config
        if x.dim() != 5:
            raise InputShapeError(f"input must be B x T x C x H x W, got {tuple(x.shape)}")
        b, t, c, h, w = x.shape
        if c != cfg.input_dim:
            raise InputShapeError(f"the network takes {cfg.input_dim} input channels, got {c}")
        m = cfg.size_multiple
        bad = [(name, n) for name, n in (("height", h), ("width", w)) if n % m or n == 0]
        if bad:
            sizes = ", ".join(
                f"{name} {n} (try {max(m, n // m * m)} or {(n // m + 1) * m})" for name, n in bad
            )
            raise InputShapeError(
                f"H and W must be multiples of {m} for a {cfg.levels}-level network: {sizes}"
            )
        if tuple(days.shape) != (b, t):
            raise InputShapeError(f"days must be B x T = {(b, t)}, got {tuple(days.shape)}")

    def forward(self, x: torch.Tensor, days: torch.Tensor, return_attention: bool = False,
                decode: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: B x T x C_in x H x W; days: B x T -> B x T x C_out x H x W (and attention
        n_head x B x T x T x H/2^(L-1) x W/2^(L-1) when ``return_attention``).

        ``decode`` B x T bool: the frames to decode (default: all). The others come out 0, as padded frames do:
        the decoder, three quarters of the work, runs frame by frame, so a frame nobody needs is not decoded."""
        self.check_input(x, days)
        days = days.to(device=x.device, dtype=torch.float32)
        b, t, c, h, w = x.shape
        pad = padding_mask(x, days, self.config.pad_value)
        keep = None
        if bool(pad.any()):
            keep = torch.nonzero(~pad.flatten(), as_tuple=True)[0]
        else:
            pad = None
        wanted = None if pad is None else ~pad
        if decode is not None:
            decode = decode.to(device=x.device, dtype=torch.bool)
            wanted = decode if wanted is None else wanted & decode
        if wanted is not None and bool(wanted.all()):
            wanted = None

        # Channels-last lets the CPU (oneDNN) and GPU convolution kernels skip layout conversions.
        frames = x.reshape(b * t, c, h, w).contiguous(memory_format=torch.channels_last)
        skips = [self.stem(frames if keep is None else frames[keep])]
        for block in self.encoder:
            skips.append(block(skips[-1]))
        # Padded frames are never encoded: their features are the pad value (0).
        skips = [self._unfold(s, b, t, keep) for s in skips]

        encoded, attention = self.temporal(skips[-1], days, pad)
        # The decoder works frame by frame: only the wanted frames go on from here.
        out = encoded.flatten(0, 1)
        queries = decoded = None
        if wanted is not None:
            queries = [torch.nonzero(row, as_tuple=True)[0] for row in wanted]
            decoded = torch.nonzero(wanted.flatten(), as_tuple=True)[0]
            out = out[decoded]
        for i, block in enumerate(self.decoder):
            level = self.config.levels - 2 - i
            out = block(out, aggregate_skip(attention, skips[level], pad, queries))
        out = self.head(out)
        if self.config.residual:
            out = out + (frames if decoded is None else frames[decoded])[:, :self.config.output_dim]
        if self.config.output_activation == "sigmoid":
            out = torch.sigmoid(out)
        out = self._unfold(out, b, t, decoded)
        return (out, attention) if return_attention else out

    @staticmethod
    def _unfold(frames: torch.Tensor, b: int, t: int, keep: torch.Tensor | None) -> torch.Tensor:
        """N x C x H x W of the kept frames -> B x T x C x H x W with zeros at padded frames."""
        if keep is None:
            return frames.reshape(b, t, *frames.shape[1:])
        full = frames.new_zeros((b * t, *frames.shape[1:]))
        if full.dim() == 4:
            full = full.contiguous(memory_format=torch.channels_last)
        full[keep] = frames
        return full.reshape(b, t, *frames.shape[1:])
