"""Training the toy judge (`vqclip.toy.judge.Judge`) on freshly drawn world and reject images.

Cross-entropy per attribute on clean images and a binary reject head, with its own seed, far
from the guides' training: the judge never sees a guide or a generated image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vqclip.toy.judge import Judge, score_scenes
from vqclip.toy.world import ATTRIBUTES, Scene, render_rejects, sample_images

REJECT_SHARE = 0.35  # of each training batch


def _labels(scenes: Sequence[Scene]) -> torch.Tensor:
    return torch.tensor([s.label() for s in scenes], dtype=torch.long)  # (N, 5)


def _perturb(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mild blur and noise, far below the reject class's smears, so the judge reads slightly
    soft decoder output as what it shows."""
    n = len(x)
    soft = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = torch.rand(n, 1, 1, 1, generator=g) * 0.6
    x = x * (1 - mix) + soft * mix
    noise = torch.randn(x.shape, generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 0.03
    return (x + noise).clamp(0, 1)


def training_batch(
    n: int, g: torch.Generator, reject_share: float = REJECT_SHARE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (n, 3, 64, 64), labels (n, 5) (-1 for rejects) and reject flags (n,)."""
    n_rej = round(n * reject_share)
    clean, scenes = sample_images(n - n_rej, g)
    rejects, _ = render_rejects(n_rej, g)
    # Every image gets the same mild perturbation: were only clean ones perturbed, the judge
    # would learn "no noise means reject" (a first version did, and refused 40% of clean images).
    images = _perturb(torch.cat([clean, rejects]), g)
    labels = torch.cat([_labels(scenes), torch.full((n_rej, len(ATTRIBUTES)), -1)])
    flags = torch.cat([torch.zeros(n - n_rej), torch.ones(n_rej)])
    return images, labels, flags


def judge_loss(
    out: Mapping[str, torch.Tensor], labels: torch.Tensor, flags: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy per attribute on clean images, plus the reject head's BCE."""
    loss = F.binary_cross_entropy_with_logits(out["reject"], flags)
    for j, name in enumerate(ATTRIBUTES):
        loss = loss + F.cross_entropy(out[name], labels[:, j], ignore_index=-1)
    return loss


def train_judge(
    *,
    steps: int = 1500,
    batch: int = 128,
    seed: int = 1234,
    lr: float = 2e-3,
    device: str = "cpu",
    progress: bool = True,
) -> Judge:
    """Train a judge from scratch on freshly drawn world and reject images; returned on the CPU."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    judge = Judge().to(device)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    judge.train()
    bar = tqdm(range(steps), desc="judge", disable=not progress, mininterval=2)
    for _ in bar:
        images, labels, flags = (t.to(device) for t in training_batch(batch, g))
        loss = judge_loss(judge(images), labels, flags)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return judge.cpu().eval().requires_grad_(False)


@torch.no_grad()
def evaluate_judge(judge: Judge, *, n: int = 1000, seed: int = 99) -> dict[str, float]:
    """Accuracy per attribute on n fresh clean images (a rejected image counts as wrong),
    `clean` (share of clean images accepted) and `reject` (share of n reject images refused)."""
    images, scenes = sample_images(n, torch.Generator().manual_seed(seed))
    rejects, _ = render_rejects(n, torch.Generator().manual_seed(seed + 1))
    refused = sum(not v.clean for v in judge.verdicts(rejects)) / n
    return {**score_scenes(judge, images, scenes), "reject": refused}
