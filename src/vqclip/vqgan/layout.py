"""Channels-last convolutions inside an NCHW decoder, for bf16 on CPU.

oneDNN's AMX convolutions (`brg_conv` on Sapphire Rapids) work in NHWC. Given an NCHW bf16
tensor, PyTorch lets oneDNN reorder the input (fast) but copies the NHWC result back to NCHW
with its generic strided copy, which is very slow for these shapes: 17 ms for one
128-channel 128x128 map and 71 ms at 256x256 (one thread), against 5-14 ms for the convolution
itself, and the same again in the backward pass. Running the whole decoder channels-last
avoids the copies but moves the cost to PyTorch's channels-last GroupNorm backward (8x slower
than its NCHW kernel in bf16), so instead each convolution runs channels-last and the layout
changes around it are done here as a transpose of 64-position tiles followed by a copy of
contiguous 128-byte rows: 3.3 ms instead of 17 ms at 128x128, 15 ms instead of 71 ms at
256x256. The values are moved, never computed: results are bit-identical to NCHW.
"""

from __future__ import annotations

import torch
from torch import nn

TILE = 64  # positions per tile: 64 bf16 values are one 128-byte run in the final copy


def to_nchw(x: torch.Tensor) -> torch.Tensor:
    """A channels-last (B, C, H, W) tensor -> the same values, contiguous NCHW."""
    b, c, h, w = x.shape
    if (h * w) % TILE:
        return x.contiguous()
    tiles = x.permute(0, 2, 3, 1).reshape(b, h * w // TILE, TILE, c)  # (B, n, T, C), a view
    tiles = tiles.transpose(2, 3).contiguous()  # (B, n, C, T)
    return tiles.transpose(1, 2).contiguous().view(b, c, h, w)  # (B, C, n, T) = NCHW


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A contiguous NCHW (B, C, H, W) tensor -> the same values, channels-last."""
    b, c, h, w = x.shape
    if (h * w) % TILE:
        return x.contiguous(memory_format=torch.channels_last)
    tiles = x.reshape(b, c, h * w // TILE, TILE).transpose(1, 2).contiguous()  # (B, n, C, T)
    rows = tiles.transpose(2, 3).contiguous()  # (B, n, T, C) = NHWC
    return rows.view(b, h, w, c).permute(0, 3, 1, 2)


class _ToChannelsLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return to_channels_last(x)

    @staticmethod
    def backward(ctx, grad):
        return to_nchw(grad)


class _ToNCHW(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return to_nchw(x)

    @staticmethod
    def backward(ctx, grad):
        return to_channels_last(grad.contiguous())


def conv_channels_last(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` for a contiguous NCHW `x`, computed channels-last; the result is NCHW."""
    return _ToNCHW.apply(conv(_ToChannelsLast.apply(x.contiguous())))
