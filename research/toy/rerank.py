"""Best-of-N: generate several candidates per prompt and keep the one the guides like best.

A candidate's score is what the loop optimised, read once on the whole image instead of on
augmented cutouts: the weighted cosine similarity between the image's embedding and each text
prompt's, averaged over the guiding CLIPs (negative weights push away, as in the loss). Reading
the whole image, un-augmented, favours candidates that hold up as one picture over those that
fooled the guides only crop by crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vqclip.errors import ConfigError
from vqclip.generate.prompts import embed_text_prompt, parse_prompts


@torch.no_grad()
def guide_scores(clips: Sequence, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Score (B,) of each image (B, 3, H, W) in [0, 1] against its own prompt string ("text:weight
    |..." syntax; image `prompts[i]`, or `prompts[0]` for every image when only one is given)."""
    if len(prompts) not in (1, len(images)):
        raise ConfigError(
            f"guide_scores: give one prompt for all {len(images)} images or one per image, "
            f"got {len(prompts)}"
        )
    specs = [parse_prompts(p) for p in (prompts if len(prompts) > 1 else prompts * len(images))]
    total = images.new_zeros(len(images))
    for clip in clips:
        size = clip.input_size
        device = next(clip.parameters()).device
        view = F.interpolate(
            images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        emb = F.normalize(clip.encode_image(view.to(device)).float(), dim=-1).cpu()
        cache: dict[str, torch.Tensor] = {}
        for i, parts in enumerate(specs):
            weights = sum(abs(s.weight) for s in parts) or 1.0
            for spec in parts:
                if spec.value not in cache:
                    text = embed_text_prompt(clip, str(spec.value)).float().cpu()
                    cache[spec.value] = F.normalize(text.reshape(-1), dim=0)
                total[i] += spec.weight / weights * float(emb[i] @ cache[spec.value])
    return total / max(len(clips), 1)


def best_of(scores: torch.Tensor, groups: int, candidates: int) -> torch.Tensor:
    """Index of the best candidate of each group, for a batch laid out candidate-major:
    image `c * groups + g` is candidate c of group g. Returns (groups,) batch indices."""
    if scores.numel() != groups * candidates:
        raise ConfigError(
            f"best_of: {scores.numel()} scores for {groups} groups x {candidates} candidates"
        )
    pick = scores.view(candidates, groups).argmax(0)  # (groups,)
    return pick * groups + torch.arange(groups)
