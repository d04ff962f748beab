"""Convolutional parts of U-TILISE: the per-frame spatial encoder and decoder blocks.

Every module here works on frames with time folded into the batch: N x C x H x W with N = B * T.
No normalisation, ReLU activations, reflect padding in every 3x3 and 4x4 convolution.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


# Below this many pixels per frame the plain pad-then-convolve path is cheaper than fixing borders.
_BORDER_FIX_MIN_PIXELS = 32 * 32


class ReflectConv2d(nn.Conv2d):
    """Conv2d with 1-pixel reflect padding (3x3 stride 1, or 4x4 stride 2), computed without a padded copy.

    The convolution runs with zero padding, which oneDNN/cuDNN do for free, and the outermost output rows
    and columns, the only ones that see the padding, get the padding's contribution added from single
    reflected input lines. On 128 x 128 frames this saves the full-size copy that reflect padding costs
    (about 20 % of each convolution's time on CPU) and gives the same numbers.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(c_in, c_out, kernel_size, stride=stride, padding=1, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] * x.shape[-1] < _BORDER_FIX_MIN_PIXELS:
            return super().forward(x)
        w, k, s = self.weight, self.kernel_size[0], self.stride[0]
        out = F.conv2d(x, w, self.bias, self.stride, padding=1)
        # Zero padding differs from reflect padding only in the padded ring, which only the outermost kernel
        # row/column reads: add that row's (column's) contribution with the reflected input line (row 1 above
        # the top, row H-2 below the bottom; likewise columns). Corners belong to the row terms, so the column
        # terms use zero padding along the column.
        out[:, :, :1] += F.conv2d(F.pad(x[:, :, 1:2], (1, 1, 0, 0), mode="reflect"), w[:, :, :1], None, (1, s))
        out[:, :, -1:] += F.conv2d(F.pad(x[:, :, -2:-1], (1, 1, 0, 0), mode="reflect"), w[:, :, k - 1:], None, (1, s))
        out[:, :, :, :1] += F.conv2d(x[:, :, :, 1:2], w[:, :, :, :1], None, (s, 1), padding=(1, 0))
        out[:, :, :, -1:] += F.conv2d(x[:, :, :, -2:-1], w[:, :, :, k - 1:], None, (s, 1), padding=(1, 0))
        return out


def _residual(branch: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """branch + x, in place when no gradient is recorded (ReLU's backward needs its own output)."""
    return branch + x if torch.is_grad_enabled() and branch.requires_grad else branch.add_(x)


def conv3(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 convolution with reflect padding that keeps H x W."""
    return ReflectConv2d(c_in, c_out, kernel_size=3)


class DoubleConv(nn.Module):
    """conv3 + ReLU, conv3 (+ ReLU unless ``last_relu`` is False). Used as stem and output head."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, last_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3(c_in, c_mid)
        self.conv2 = conv3(c_mid, c_out)
        self.last_relu = last_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x).relu_())
        return x.relu_() if self.last_relu else x


class DownBlock(nn.Module):
    """Halves H and W: strided 4x4 conv, then a residual pair of 3x3 convs (c_in -> c_out)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.down = ReflectConv2d(c_in, c_in, kernel_size=4, stride=2)
        self.conv1 = conv3(c_in, c_out)
        self.conv2 = conv3(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.down(x).relu_()).relu_()
        # The residual sum is deliberately left without a ReLU, as in the original.
        return _residual(self.conv2(x).relu_(), x)


class UpBlock(nn.Module):
    """Doubles H and W and merges the attention-aggregated skip connection of the same level.

    ``c_in`` is the width coming from below, ``c_out`` the width of this level in the decoder and
    ``c_skip`` the width of the encoder map at this level.
    """

    def __init__(self, c_in: int, c_out: int, c_skip: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)
        self.skip = nn.Conv2d(c_skip, c_skip, kernel_size=1)
        self.conv1 = conv3(c_out + c_skip, c_out)
        self.conv2 = conv3(c_out, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x: N x c_in x h x w; skip: N x c_skip x 2h x 2w -> N x c_out x 2h x 2w."""
        up, skip = self.up(x), self.skip(skip)
        if torch.is_grad_enabled() and (up.requires_grad or skip.requires_grad):
            merged = torch.cat([up.relu(), skip.relu()], dim=1)
        else:
            # Inference: both ReLUs write straight into the concatenated map, which saves the copy that
            # torch.cat makes (at 128 x 128 the merged map is the largest tensor of the pass).
            merged = torch.empty((up.shape[0], up.shape[1] + skip.shape[1], *up.shape[2:]), dtype=up.dtype,
                                 device=up.device, memory_format=torch.channels_last)
            torch.clamp_min(up, 0.0, out=merged[:, :up.shape[1]])
            torch.clamp_min(skip, 0.0, out=merged[:, up.shape[1]:])
        x = self.conv1(merged).relu_()
        return _residual(self.conv2(x).relu_(), x)
