"""VQGAN encoder and decoder (Esser et al. 2021, https://arxiv.org/abs/2012.09841).

The architecture and every attribute name follow taming-transformers'
`taming/modules/diffusionmodules/model.py`, so a taming state dict loads with strict=True.
The time-embedding paths of the diffusion model these layers came from are absent: the
VQGAN never uses them and its checkpoints hold no weights for them.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from vqclip.attention import attention
from vqclip.vqgan.config import VQGANConfig
from vqclip.vqgan.layout import conv_channels_last


def normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


@functools.cache
def nhwc_bf16_convs() -> bool:
    """Whether oneDNN runs bf16 convolutions of NCHW maps with its NHWC kernels on this CPU
    (AMX): only there is the channels-last path bit-identical to PyTorch's (the same kernel,
    without PyTorch's slow copy back). An AVX-512 CPU without AMX sums in another order, so
    the decoder keeps PyTorch's own path there."""
    from vqclip.devices import cpu_description

    return cpu_description()["best"] == "amx_bf16"


def conv(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)`; bf16 maps of 32x32 and more on a CPU with AMX run the convolution
    channels-last (see vqclip.vqgan.layout: PyTorch's copy of oneDNN's NHWC result back to NCHW
    costs more than the convolution there). fp32, and bf16 elsewhere, keep PyTorch's path, so
    their results do not change."""
    big = x.shape[-2] * x.shape[-1] >= 1024
    if x.device.type == "cpu" and x.dtype == torch.bfloat16 and big and nhwc_bf16_convs():
        return conv_channels_last(layer, x)
    return layer(x)


# building blocks


class ResnetBlock(nn.Module):
    """norm-swish-conv twice, plus a 1x1 `nin_shortcut` when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = conv(self.conv1, F.silu(self.norm1(x)))
        h = conv(self.conv2, self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = conv(self.nin_shortcut, x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, with 1x1 convs as projections."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = normalize(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x_norm = self.norm(x)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, 1, c, h * w).transpose(2, 3)  # (B, 1, HW, C)

        q, k, v = heads(self.q(x_norm)), heads(self.k(x_norm)), heads(self.v(x_norm))
        out = attention(q, k, v)  # (B, 1, HW, C), scale 1/sqrt(C)
        out = out.transpose(2, 3).reshape(b, c, h, w)  # (B, C, H, W)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding right and bottom only (taming's asymmetric pad)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv(self.conv, F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """The resnet `block`s of one resolution, each followed by its `attn` if there are any."""

    def __init__(self, blocks: list[ResnetBlock], attns: list[AttnBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)  # empty, or one per block

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class DownLevel(Level):
    def __init__(
        self, blocks: list[ResnetBlock], attns: list[AttnBlock], downsample: Downsample | None
    ) -> None:
        super().__init__(blocks, attns)
        self.downsample = downsample

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = super().forward(h)
        return h if self.downsample is None else self.downsample(h)


class UpLevel(Level):
    def __init__(
        self, blocks: list[ResnetBlock], attns: list[AttnBlock], upsample: Upsample | None
    ) -> None:
        super().__init__(blocks, attns)
        self.upsample = upsample

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = super().forward(h)
        return h if self.upsample is None else self.upsample(h)


class Middle(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> features (B, z_channels, H/f, W/f)."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        c = config
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, kernel_size=3, padding=1)
        # Attention placement follows the nominal `resolution`, not the input size.
        curr_res = c.resolution
        in_mult = (1, *c.ch_mult)
        levels = []
        for i, mult in enumerate(c.ch_mult):
            block_in, block_out = c.ch * in_mult[i], c.ch * mult
            blocks, attns = [], []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, c.dropout))
                block_in = block_out
                if curr_res in c.attn_resolutions:
                    attns.append(AttnBlock(block_out))
            last = i == len(c.ch_mult) - 1
            levels.append(DownLevel(blocks, attns, None if last else Downsample(block_out)))
            if not last:
                curr_res //= 2
        self.down = nn.ModuleList(levels)
        width = c.ch * c.ch_mult[-1]
        self.mid = Middle(width, c.dropout)
        self.norm_out = normalize(width)
        self.conv_out = nn.Conv2d(width, c.z_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return conv(self.conv_out, F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Features (B, z_channels, h, w) -> image (B, out_ch, h*f, w*f).

    `up[i]` is the level at resolution i (0 = full size), as in taming, so the levels run in
    reverse index order.
    """

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        c = config
        n = len(c.ch_mult)
        block_in = c.ch * c.ch_mult[-1]
        curr_res = c.resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(c.z_channels, block_in, kernel_size=3, padding=1)
        self.mid = Middle(block_in, c.dropout)
        levels: list[UpLevel] = []
        for i in reversed(range(n)):
            block_out = c.ch * c.ch_mult[i]
            blocks, attns = [], []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, c.dropout))
                block_in = block_out
                if curr_res in c.attn_resolutions:
                    attns.append(AttnBlock(block_out))
            levels.insert(0, UpLevel(blocks, attns, Upsample(block_out) if i else None))
            if i:
                curr_res *= 2
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, c.out_ch, kernel_size=3, padding=1)
        # Gradient checkpointing: keep only each level's input for the backward pass and run
        # the level again there. Not part of the weights; the generation loop sets it.
        self.checkpoint = False

    def _run(self, part: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and torch.is_grad_enabled() and h.requires_grad:
            return torch.utils.checkpoint.checkpoint(part, h, use_reentrant=False)
        return part(h)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self._run(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            h = self._run(level, h)
        return conv(self.conv_out, F.silu(self.norm_out(h)))
