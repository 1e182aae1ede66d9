"""Adversarial (PGD) training of the toy guides: the views move within the ball and hurt."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from vqclip.clip import CLIP
from vqclip.toy.train_clip import (
    TOY_CLIP,
    adversarial_views,
    multi_positive_loss,
    positives,
    train_clip,
    training_batch,
)

SMALL_GUIDE = replace(TOY_CLIP, embed_dim=16, vision_width=8, text_width=16, text_layers=1)


def _loss(model: CLIP, views: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor) -> float:
    emb = F.normalize(model.encode_image(views), dim=-1)
    return float(multi_positive_loss(model.logit_scale.exp() * emb @ txt.t(), pos))


def test_adversarial_views_stay_in_the_ball_and_raise_the_loss():
    torch.manual_seed(0)
    model = CLIP(SMALL_GUIDE).eval()
    images, captions, img_slots, cap_slots = training_batch(12, torch.Generator().manual_seed(1))
    with torch.no_grad():
        txt = F.normalize(model.encode_text_str(captions), dim=-1)
    pos = positives(img_slots, cap_slots)
    adv = adversarial_views(model, images, txt, pos, eps=2.0, steps=3)
    norms = (adv - images).flatten(1).norm(dim=1)
    assert (norms <= 2.0 + 1e-4).all() and (norms > 1.0).all()
    # No gradient leaks into the weights, and the perturbation raises the loss far more than
    # random noise of the same size (an untrained tower moves little either way).
    assert all(p.grad is None for p in model.parameters())
    noise = torch.randn_like(images)
    noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * norms.view(-1, 1, 1, 1)
    with torch.no_grad():
        clean, rand, worst = (_loss(model, x, txt, pos) for x in (images, images + noise, adv))
    assert worst - clean > 5 * abs(rand - clean) and worst > clean


def test_training_with_adversarial_views_runs_and_changes_the_guide():
    args = dict(steps=2, batch=8, config=SMALL_GUIDE, seed=3, progress=False)
    plain = train_clip(**args)
    robust = train_clip(adv_eps=1.0, adv_steps=2, **args)
    assert not torch.allclose(plain.visual.conv1.weight, robust.visual.conv1.weight)
