"""The peak-memory estimate bounds what a CLIP image tower really keeps for backward."""

import pytest
import torch

from vqclip.clip import CLIP, CLIPConfig
from vqclip.generate.memory import _clip_values_per_cut

TOWERS = {
    "vit": dict(patch_size=8, vision_width=64, vision_layers=2, image_size=32),
    "resnet": dict(vision_width=16, vision_layers=(1, 2, 1, 1), image_size=64),
}


def _saved_values(clip: CLIP, image: torch.Tensor) -> int:
    """Values of the activations autograd keeps (parameters and their views left out)."""
    params = {p.data_ptr() for p in clip.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in params and t.untyped_storage().data_ptr() not in params:
            seen[t.data_ptr()] = t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        clip.encode_image(image.requires_grad_(True))
    return sum(seen.values())


@pytest.mark.parametrize("kind", TOWERS)
def test_estimate_is_a_generous_upper_bound(kind):
    config = CLIPConfig(embed_dim=16, text_width=32, text_layers=1, quick_gelu=True, **TOWERS[kind])
    clip = CLIP(config).train(False)
    size = config.image_size
    actual = _saved_values(clip, torch.rand(1, 3, size, size))
    estimate = _clip_values_per_cut(config)
    assert actual <= estimate <= 12 * actual, (actual, estimate)
