"""Levers on the toy guides: adversarial (PGD) views, and lumpy blobs as hard negatives."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from vqclip.clip import CLIP
from vqclip.toy.train_clip import (
    DEFAULT_HARD_KINDS,
    TOY_CLIP,
    adversarial_views,
    lumpy_blobs,
    multi_positive_loss,
    positives,
    render_hard_negatives,
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


def test_blob_hard_negatives_are_one_lumpy_object_and_opt_in():
    kinds = (*DEFAULT_HARD_KINDS, "blob")
    images, names = render_hard_negatives(48, torch.Generator().manual_seed(4), kinds)
    blobs = images[[n == "blob" for n in names]]
    assert 8 <= len(blobs) <= 28
    # Two colours (a scene's shape colour and background), nothing else.
    for img in blobs:
        colours = img.flatten(1).t().round(decimals=2).unique(dim=0)
        assert len(colours) >= 2
        far = (img - img[:, :1, :1]).abs().amax(0)
        assert far.max() > 0.2
    # One object: the covered pixels form a single 4-connected region of plausible size.
    cover = lumpy_blobs(32, torch.Generator().manual_seed(5))[:, 0] > 0.5
    for fg in cover:
        assert 20 < int(fg.sum()) < 64 * 64 // 2
        seen = torch.zeros_like(fg)
        stack = [tuple(fg.nonzero()[0].tolist())]
        while stack:
            y, x = stack.pop()
            if 0 <= y < 64 and 0 <= x < 64 and fg[y, x] and not seen[y, x]:
                seen[y, x] = True
                stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
        assert torch.equal(seen, fg)
    # Lumpy, not round: the outline's distance from the centroid varies.
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    spreads = []
    for c in cover:
        edge = c & ~F.max_pool2d((~c).float()[None, None], 3, 1, 1)[0, 0].bool()
        cy, cx = ys[c].mean(), xs[c].mean()
        d = ((ys[edge] - cy) ** 2 + (xs[edge] - cx) ** 2).sqrt()
        spreads.append(float(d.std() / d.mean()))
    assert sorted(spreads)[len(spreads) // 2] > 0.08
    # The default stays as it was: no blobs unless asked for.
    _, default = render_hard_negatives(48, torch.Generator().manual_seed(4))
    assert "blob" not in default
    with pytest.raises(ValueError, match="kinds"):
        render_hard_negatives(4, torch.Generator(), ("blob",))
