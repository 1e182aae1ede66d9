"""Training the judge: batches label rejects apart, and training moves it toward the labels."""

from __future__ import annotations

import torch

from research.toy.train_judge import evaluate_judge, judge_loss, train_judge, training_batch
from vqclip.toy.world import ATTRIBUTES


def test_judge_batches_label_rejects_apart():
    images, labels, flags = training_batch(20, torch.Generator().manual_seed(0))
    assert images.shape == (20, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    assert ((labels == -1).all(1) == (flags == 1)).all() and 0 < flags.sum() < 20


def test_training_lowers_the_loss_and_returns_a_frozen_judge():
    g = torch.Generator().manual_seed(3)
    images, labels, flags = training_batch(64, g)
    before = train_judge(steps=1, batch=16, lr=1e-9, progress=False)
    after = train_judge(steps=10, batch=16, progress=False)
    assert not after.training and not any(p.requires_grad for p in after.parameters())
    with torch.no_grad():
        assert judge_loss(after(images), labels, flags) < judge_loss(before(images), labels, flags)
    figures = evaluate_judge(after, n=8, seed=1)
    assert set(figures) == {*ATTRIBUTES, "clean", "reject"}
    assert all(0 <= v <= 1 for v in figures.values())
