"""CUDA graphs for the two heavy parts of a step: the decoder and each CLIP image tower.

With ViT-B/32 a step is launch-bound on a fast GPU (hundreds of small kernels: GroupNorm, SiLU,
LayerNorm, ...). `torch.cuda.make_graphed_callables` records each part's forward and backward
once and replays them, so each costs one launch. Their input shapes are fixed per run (the batch
of latents, the batch of cutouts), which graphs require. The cutouts stay eager (between the
graphed parts; they draw on the device and make no host syncs, see `vqclip.generate.cutouts`).
"""

from __future__ import annotations

import torch
from torch import nn


class _Decode(nn.Module):
    def __init__(self, vqgan: nn.Module) -> None:
        super().__init__()
        self.vqgan = vqgan

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.vqgan.decode(z_q)


class _EncodeImage(nn.Module):
    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)


def graphed_parts(vqgan, clips, latent_shape, cutn_total: int, dtype: torch.dtype, device):
    """(decode, [encode_image per CLIP]) as graphed callables for these fixed input shapes."""

    def sample(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)

    decode = torch.cuda.make_graphed_callables(_Decode(vqgan), (sample(*latent_shape),))
    encoders = [
        torch.cuda.make_graphed_callables(
            _EncodeImage(clip), (sample(cutn_total, 3, clip.input_size, clip.input_size),)
        )
        for clip in clips
    ]
    return decode, encoders
