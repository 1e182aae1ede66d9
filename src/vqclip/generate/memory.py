"""A rough peak-memory estimate, so an impossible size fails at once with a clear message.

Activations kept for the backward pass dominate: the decoder's feature maps at every level, and
CLIP's token activations for every cutout. The factors are deliberately generous upper bounds.
"""

from __future__ import annotations

import torch

from vqclip.errors import ConfigError

_BYTES = 4  # fp32 activations
_DECODER_TENSORS_PER_BLOCK = 8  # norm, swish and conv inputs kept for backward, twice per block
_CLIP_TENSORS_PER_LAYER = 16  # ln, qkv, attention output, 4x-wide MLP and its activation


def estimate_bytes(config, vqgan, clips, image_size: tuple[int, int]) -> int:
    vq = vqgan.config
    width, height = image_size
    f = vqgan.downsample_factor
    decoder = 0
    for level, mult in enumerate(vq.ch_mult):
        scale = f // 2**level
        pixels = (width // scale) * (height // scale) if scale >= 1 else width * height
        decoder += (vq.num_res_blocks + 1) * _DECODER_TENSORS_PER_BLOCK * vq.ch * mult * pixels
    decoder *= config.batch_size * _BYTES
    clip_bytes = 0
    for clip in clips:
        c = clip.config
        tokens = (c.image_size // c.patch_size) ** 2 + 1
        per_cut = c.vision_layers * tokens * c.vision_width * _CLIP_TENSORS_PER_LAYER
        clip_bytes += per_cut * config.cutn * config.batch_size * _BYTES
    weights = sum(p.numel() * p.element_size() for m in (vqgan, *clips) for p in m.parameters())
    return decoder + clip_bytes + weights


def check_memory(config, vqgan, clips, image_size, device: torch.device) -> None:
    from vqclip.devices import available_memory_bytes

    need = estimate_bytes(config, vqgan, clips, image_size)
    have = available_memory_bytes(device)
    if need > have:
        width, height = image_size
        raise ConfigError(
            f"size={width}x{height} with batch {config.batch_size} and cutn {config.cutn} needs "
            f"about {need / 2**30:.1f} GiB on {device}, but only {have / 2**30:.1f} GiB is free; "
            "use a smaller --size, fewer --cutn or a smaller batch"
        )
