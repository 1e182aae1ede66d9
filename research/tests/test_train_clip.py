"""Training the toy guides: multi-positive contrastive batches, hard negatives, views, PGD."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from research.toy.train_clip import (
    HARD_NEGATIVE_CAPTIONS,
    TOY_CLIP,
    _caption_items,
    adversarial_views,
    guide_views,
    multi_positive_loss,
    positives,
    render_hard_negatives,
    train_clip,
    training_batch,
    zero_shot,
)
from vqclip.clip import CLIP
from vqclip.toy.eval import guide_reading
from vqclip.toy.world import ATTRIBUTES, parse_caption, sample_images, satisfies


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_satisfied_caption_is_a_positive():
    _, captions, img_slots, cap_slots = training_batch(24, _gen(2))
    pos = positives(img_slots, cap_slots)
    assert pos.diagonal().all()  # each image matches its own caption
    _, scenes = sample_images(18, _gen(2))  # the batch's clean images, redrawn
    for i, scene in enumerate(scenes):
        for j, text in enumerate(captions[:18]):
            assert bool(pos[i, j]) == satisfies(scene, parse_caption(text))
    # A reject image matches no world caption.
    assert not pos[18:, :18].any()


def test_multi_positive_loss_prefers_embeddings_that_match_all_positives():
    pos = torch.tensor([[True, True, False], [False, False, True]])
    good = torch.tensor([[5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]])
    assert multi_positive_loss(good, pos) < multi_positive_loss(-good, pos)


def test_hard_negatives_match_only_their_own_captions():
    images, kinds = render_hard_negatives(12, _gen(7))
    assert images.shape == (12, 3, 64, 64) and set(kinds) == set(HARD_NEGATIVE_CAPTIONS)
    captions, img_slots, own_slots = _caption_items(kinds, _gen(8))
    assert all(c in HARD_NEGATIVE_CAPTIONS[k] for c, k in zip(captions, kinds, strict=True))
    *_, world_slots = training_batch(64, _gen(9))
    world = world_slots[world_slots[:, -1] == 0]  # captions of clean scenes
    assert not positives(img_slots, world).any()
    assert positives(img_slots, own_slots).diagonal().all()


def test_guide_views_keep_size_and_vary():
    images, _ = sample_images(6, _gen(3))
    size = TOY_CLIP.image_size
    views = guide_views(images, _gen(4), size)
    assert views.shape == (6, 3, size, size)
    assert not torch.equal(views, guide_views(images, _gen(5), size))


def test_training_resumes_from_the_given_guide(small_guide, small_guide_config):
    args = dict(steps=1, batch=8, pool=32, group=4, progress=False)
    trained = train_clip(init=small_guide, lr=1e-9, **args)
    # A vanishing learning rate leaves the starting weights: it went on from the guide.
    params = zip(small_guide.named_parameters(), trained.parameters(), strict=True)
    for (name, a), b in params:
        assert torch.allclose(a, b, atol=1e-6), name
    fresh = train_clip(config=small_guide_config, lr=1e-9, seed=5, **args)
    assert not torch.allclose(fresh.visual.conv1.weight, small_guide.visual.conv1.weight)


def test_zero_shot_is_the_guides_reading_of_fresh_images(small_guide):
    acc = zero_shot(small_guide, n=16, seed=5)
    assert set(acc) == {*ATTRIBUTES, "reject"}
    images, scenes = sample_images(16, _gen(5))
    truth = torch.tensor([ATTRIBUTES["shape"].index(s.shape) for s in scenes])
    want = float((guide_reading([small_guide], images, "shape") == truth).float().mean())
    assert acc["shape"] == want


def _loss(model: CLIP, views: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor) -> float:
    emb = F.normalize(model.encode_image(views), dim=-1)
    return float(multi_positive_loss(model.logit_scale.exp() * emb @ txt.t(), pos))


def test_adversarial_views_stay_in_the_ball_and_raise_the_loss(small_guide_config):
    torch.manual_seed(0)
    model = CLIP(small_guide_config).eval()
    images, captions, img_slots, cap_slots = training_batch(12, _gen(1))
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


def test_training_with_adversarial_views_changes_the_guide(small_guide_config):
    args = dict(steps=2, batch=8, config=small_guide_config, seed=3, progress=False)
    plain = train_clip(**args)
    robust = train_clip(adv_eps=1.0, adv_steps=2, **args)
    assert not torch.allclose(plain.visual.conv1.weight, robust.visual.conv1.weight)
