"""Training the masked toy prior told the shape: widening a trained prior for a class token,
the blobbed copies it learns to re-outline, and a short run's model and condition."""

from __future__ import annotations

import pytest
import torch

from research.toy.train_masked_prior import (
    blobby,
    held_out,
    object_weights,
    shape_sampling,
    train_masked_prior,
    widen,
)
from vqclip.prior.transformer import TokenTransformer, TransformerConfig
from vqclip.toy.world import SHAPES, sample_images


def test_widen_keeps_the_old_weights_and_moves_positions_after_the_class_token():
    torch.manual_seed(0)
    old = TokenTransformer(TransformerConfig(17, 16, 1, 2, 8, n_unmasked=16))
    new = widen(old, TransformerConfig(21, 17, 1, 2, 8, n_unmasked=17))
    assert torch.equal(new.tok_emb.weight[:17], old.tok_emb.weight)
    assert torch.equal(new.head.weight[:17], old.head.weight)
    assert torch.equal(new.pos_emb[:, 1:], old.pos_emb) and not new.pos_emb[:, 0].any()
    assert torch.equal(new.blocks[0].mlp[0].weight, old.blocks[0].mlp[0].weight)
    assert new.blocks[0].attn.mask.all()  # every position sees every other


def test_blobbed_copies_keep_the_object_roughly_but_not_its_outline():
    images, _ = sample_images(8, torch.Generator().manual_seed(1))
    out = blobby(images, torch.Generator().manual_seed(2))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    change = (out - images).abs().mean((1, 2, 3))
    assert (change > 0.002).all() and (change < 0.1).all()


def test_a_short_run_trains_a_prior_that_names_the_shapes():
    prior, losses = train_masked_prior(
        steps=3, batch=4, pool=32, classes=True, blobs=0.5, log=lambda *_: None
    )
    config, condition = prior.transformer.config, prior.condition
    assert config.block_size == config.n_unmasked == 1 + 16 * 16
    assert config.vocab_size == 512 + 1 + len(SHAPES)
    assert condition.kind == "masked" and condition.mask_token == 512
    assert condition.class_names == SHAPES and len(losses) == 3
    assert all(torch.isfinite(torch.tensor(losses)))


def test_the_object_s_tokens_weigh_more_than_the_background_s():
    codes = torch.tensor([[5, 5, 5, 7, 5, 9], [1, 2, 2, 2, 3, 2]])
    w = object_weights(codes, 4.0)
    assert w.tolist() == [[1, 1, 1, 4, 1, 4], [4, 1, 1, 1, 4, 1]]
    _, losses = train_masked_prior(
        steps=2, batch=4, pool=32, classes=True, object_weight=4.0, log=lambda *_: None
    )
    _, plain_losses = train_masked_prior(
        steps=2, batch=4, pool=32, classes=True, log=lambda *_: None
    )
    assert losses[0] != plain_losses[0]  # the same batch, weighed otherwise


def test_shape_weights_draw_a_shape_more_often_and_reject_a_wrong_length():
    shapes = torch.tensor([0, 1, 2, 3] * 25)
    weights = shape_sampling(shapes, [1, 1, 1, 3])
    picks = torch.multinomial(weights, 6000, replacement=True, generator=torch.Generator())
    stars = (shapes[picks] == SHAPES.index("star")).float().mean()
    assert 0.45 < stars < 0.55  # 3 of 6
    assert shape_sampling(shapes, None) is None
    with pytest.raises(ValueError, match="one per"):
        shape_sampling(shapes, [1, 3])
    _, losses = train_masked_prior(
        steps=2, batch=4, pool=32, classes=True, shape_weights=[0, 0, 0, 1], log=lambda *_: None
    )
    _, plain_losses = train_masked_prior(
        steps=2, batch=4, pool=32, classes=True, log=lambda *_: None
    )
    assert losses[0] != plain_losses[0]  # other grids drawn


def test_held_out_by_shape_averages_to_about_the_whole():
    prior, _ = train_masked_prior(steps=1, batch=4, pool=32, classes=True, log=lambda *_: None)
    whole = held_out(prior, n=32)
    parts = held_out(prior, n=32, by_shape=True)
    assert set(parts) == set(SHAPES)
    assert min(parts.values()) - 1e-4 <= whole <= max(parts.values()) + 1e-4
