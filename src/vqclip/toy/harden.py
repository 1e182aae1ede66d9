"""Hardening the toy guides against the images the generation loop makes.

Guides trained on rendered images alone are fooled by what the loop paints: the prompt's colours
as clusters of fragments, which read as "a star on black" to a guide but as clutter to the judge
(docs/toy.md). This is adversarial training in one round: run the normal loop (`Generator`) with
the guides on world captions, keep snapshots of what it paints, and continue training each guide
with those images as clutter, while half of its clean images are drawn by the VQGAN (encoded and
decoded), so that clean and rejected images come in the same drawing style and only the layout
tells them apart. The judge takes no part: every loop image is labelled clutter, including the
few that happen to be right.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from vqclip.clip import CLIP
from vqclip.generate import GenerateConfig, Generator
from vqclip.toy.world import caption_text, sample_scenes
from vqclip.vqgan import VQGAN

# helper functions


def loop_prompts(n: int, seed: int) -> list[str]:
    """n full world captions (shape, colour, background; every third also size and position)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, scene in enumerate(sample_scenes(n, g)):
        names = ("shape", "colour", "background") + (("size", "position") if i % 3 == 2 else ())
        out.append(caption_text({k: getattr(scene, k) for k in names}))
    return out


# main functions


def loop_negatives(
    vqgan: VQGAN,
    clip_paths: Sequence[Path],
    clips: Sequence[CLIP],
    *,
    prompts: Sequence[str],
    steps: int = 60,
    snapshots: Sequence[int] = (20, 40, 60),
    cutn: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """Images (len(prompts) * len(snapshots), 3, H, W) the loop paints for `prompts` with these
    guides (the eval's settings: overview cutouts, Adam, random init), taken at `snapshots`."""
    if not snapshots or max(snapshots) > steps:
        raise ValueError(f"snapshots {tuple(snapshots)} must be steps within 1..{steps}")
    config = GenerateConfig(
        prompts=tuple(prompts),
        batch_size=len(prompts),
        size=(64, 64),
        iterations=steps,
        seed=seed,
        vqgan="toy",
        clip=tuple(str(p) for p in clip_paths),
        cutn=cutn,
        cut_method="overview",
        device="cpu",
        precision="fp32",
    )
    gen = Generator(config, vqgan=vqgan, clips=list(clips), device="cpu")
    kept = []
    for step in tqdm(gen.iterate(), total=steps, desc="loop negatives", disable=not progress):
        if step.index in snapshots:
            kept.append(step.image[~step.failed].cpu())
    return torch.cat(kept)
