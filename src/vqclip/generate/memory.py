"""A rough peak-memory estimate, so an impossible size fails at once with a clear message.

Activations kept for the backward pass dominate: the decoder's feature maps at every level, and
CLIP's token activations for every cutout. The factors are deliberately generous upper bounds.
"""

from __future__ import annotations

import torch

from vqclip.errors import ConfigError

_BYTES = 4  # fp32 activations
_DECODER_TENSORS_PER_BLOCK = 8  # norm, swish and conv inputs kept for backward, twice per block
_CLIP_TENSORS_PER_LAYER = 20  # ln, qkv, attention and its output, 4x-wide MLP, activation
_RESNET_TENSORS_PER_BLOCK = 8  # conv, norm and ReLU outputs of a bottleneck, at its widest


def _clip_values_per_cut(c) -> int:
    """Activation values one cutout keeps for the backward pass through a CLIP image tower."""
    pixels = 9 * c.image_size**2  # the cutout, its normalised copy and the patches or stem input
    if not c.is_resnet:
        tokens = (c.image_size // c.patch_size) ** 2 + 1
        return pixels + c.vision_layers * tokens * c.vision_width * _CLIP_TENSORS_PER_LAYER
    side = c.image_size // 2  # the stem works at half resolution
    values = pixels + 9 * side * side * c.vision_width  # three conv + norm + ReLU
    side //= 2
    for stage, blocks in enumerate(c.vision_layers):
        side = side if stage == 0 else side // 2
        channels = c.vision_width * 2**stage * 4
        values += blocks * _RESNET_TENSORS_PER_BLOCK * channels * side * side
    return values


def estimate_bytes(config, vqgan, clips, image_size: tuple[int, int]) -> int:
    vq = vqgan.config
    width, height = image_size
    f = vqgan.downsample_factor
    levels = []
    for level, mult in enumerate(vq.ch_mult):
        scale = f // 2**level
        pixels = (width // scale) * (height // scale) if scale >= 1 else width * height
        levels.append((vq.num_res_blocks + 1) * _DECODER_TENSORS_PER_BLOCK * vq.ch * mult * pixels)
    if config.checkpoint_decoder:
        # Each level's input is kept, and one level at a time is recomputed in backward.
        per_tensor = _DECODER_TENSORS_PER_BLOCK * (vq.num_res_blocks + 1)
        decoder = max(levels) + sum(levels) // per_tensor
    else:
        decoder = sum(levels)
    decoder *= config.batch_size * _BYTES
    clip_bytes = 0
    for clip in clips:
        per_cut = _clip_values_per_cut(clip.config)
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
