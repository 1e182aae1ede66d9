"""Hardening the guides: loop snapshots become clutter, training resumes from a guide."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vqclip.clip import CLIP
from vqclip.toy.harden import loop_negatives, loop_prompts
from vqclip.toy.train_clip import TOY_CLIP, _Pool, train_clip
from vqclip.toy.train_vqgan import TOY_VQGAN, reconstruct
from vqclip.toy.world import parse_caption
from vqclip.vqgan import VQGAN

# A guide of the toy kind (ResNet tower at 64 px), a few channels wide.
SMALL_GUIDE = replace(TOY_CLIP, embed_dim=16, vision_width=8, text_width=16, text_layers=1)
# f4 like the toy VQGAN, so 64 px images make a 16x16 grid.
SMALL_VQGAN = replace(TOY_VQGAN, z_channels=8, embed_dim=4, n_embed=16)


@pytest.fixture
def small_models():
    torch.manual_seed(0)
    vqgan = VQGAN(SMALL_VQGAN).eval().requires_grad_(False)
    return vqgan, [CLIP(SMALL_GUIDE).eval().requires_grad_(False)]


def test_loop_prompts_are_seeded_world_captions():
    prompts = loop_prompts(9, seed=3)
    assert prompts == loop_prompts(9, seed=3) and prompts != loop_prompts(9, seed=4)
    named = [set(parse_caption(p)) for p in prompts]
    assert all({"shape", "colour", "background"} <= n for n in named)
    assert sum(len(n) == 5 for n in named) == 3  # every third also names size and position


def test_loop_negatives_are_the_loops_snapshots(small_models):
    vqgan, clips = small_models
    prompts = loop_prompts(2, seed=0)
    args = dict(prompts=prompts, steps=4, snapshots=(2, 4), cutn=2, progress=False)
    images = loop_negatives(vqgan, ["a"], clips, seed=0, **args)
    assert images.shape == (4, 3, 64, 64)  # 2 prompts x 2 snapshots
    assert images.min() >= 0 and images.max() <= 1
    # Snapshots at different steps differ: the loop moved between them.
    assert not torch.equal(images[:2], images[2:])
    assert torch.equal(images, loop_negatives(vqgan, ["a"], clips, seed=0, **args))
    with pytest.raises(ValueError, match="snapshots"):
        loop_negatives(vqgan, ["a"], clips, prompts=prompts, steps=3, snapshots=(5,))


def test_pool_takes_negatives_as_clutter_and_redraws_half_the_clean_images():
    negatives = torch.full((10, 3, 64, 64), 0.5)
    calls = []

    def redraw(x):
        calls.append(len(x))
        return torch.zeros_like(x)

    pool = _Pool(64, torch.Generator().manual_seed(0), group=4, negatives=negatives, redraw=redraw)
    assert pool.kinds.count("clutter") >= 10 and len(pool.kinds) == 16  # 25% of 64 are rejects
    assert (pool.rejects[:10] == 0.5).all()
    assert sum(calls) == len(pool.clean) // 2
    black = pool.clean.flatten(1).amax(1) == 0
    assert black.sum() == len(pool.clean) // 2


def test_training_resumes_from_the_given_guide(small_models):
    vqgan, (guide,) = small_models
    negatives = torch.rand(8, 3, 64, 64)
    args = dict(steps=1, batch=8, pool=32, group=4, negatives=negatives, progress=False)
    trained = train_clip(init=guide, lr=1e-9, redraw=lambda x: reconstruct(vqgan, x), **args)
    # A vanishing learning rate leaves the starting weights: it went on from `guide`.
    params = zip(guide.named_parameters(), trained.parameters(), strict=True)
    for (name, a), b in params:
        assert torch.allclose(a, b, atol=1e-6), name
    fresh = train_clip(config=SMALL_GUIDE, lr=1e-9, **args)
    assert not torch.allclose(fresh.visual.conv1.weight, guide.visual.conv1.weight)
    with pytest.raises(ValueError, match="pool"):
        train_clip(steps=1, batch=8, negatives=negatives, config=SMALL_GUIDE, progress=False)


def test_sharpen_tunes_only_the_decoder_and_uses_the_discriminator():
    from vqclip.toy.train_vqgan import sharpen_decoder

    def fresh() -> VQGAN:
        torch.manual_seed(0)
        return VQGAN(SMALL_VQGAN)

    before = fresh().state_dict()
    plain = sharpen_decoder(fresh(), steps=2, batch=4, gan_weight=0.0, progress=False)
    sharp = sharpen_decoder(fresh(), steps=2, batch=4, gan_weight=0.5, progress=False)
    assert not sharp.training and not any(p.requires_grad for p in sharp.parameters())
    for name, value in sharp.state_dict().items():
        tuned = name.startswith(("decoder.", "post_quant_conv."))
        if not tuned:  # encoder, quant_conv and the codebook stay as they were
            assert torch.equal(value, before[name]), name
    assert not torch.equal(sharp.decoder.conv_out.weight, before["decoder.conv_out.weight"])
    # The GAN term changes what the decoder learns.
    assert not torch.equal(sharp.decoder.conv_out.weight, plain.decoder.conv_out.weight)


def test_edge_weighted_reconstruction_loss_counts_errors_at_outlines_more():
    from vqclip.toy.train_vqgan import edge_weights, reconstruction_loss

    x = -torch.ones(2, 3, 32, 32)
    x[:, 0, 8:24, 8:24] = 1.0  # a red square on black: its outline is the only edge
    w = edge_weights(x, 8.0)
    assert w.shape == (2, 1, 32, 32) and torch.isclose(w.mean(), torch.tensor(1.0))
    assert w[0, 0, 8, 16] > 4 * w[0, 0, 0, 0]  # on the outline vs a far corner
    at_edge, far = x.clone(), x.clone()
    at_edge[:, :, 7:9, 10:14] += 0.3  # the same error: 2x4 pixels at the outline...
    far[:, :, 1:3, 1:5] += 0.3  # ...or in the background, away from it
    # Unweighted, both errors cost the same; edge-weighted, the one at the outline costs more.
    assert torch.isclose(reconstruction_loss(at_edge, x), reconstruction_loss(far, x), rtol=1e-5)
    assert reconstruction_loss(at_edge, x, 8.0) > 2 * reconstruction_loss(far, x, 8.0)
    # Weight 0 is the plain loss exactly (the main VQGAN training uses it).
    assert torch.equal(reconstruction_loss(far, x, 0.0), reconstruction_loss(far, x))


def test_train_vqgan_runs_seeded_and_its_edge_weight_reaches_the_loss():
    from vqclip.toy.train_vqgan import train_vqgan

    args = dict(steps=3, batch=4, warmup=1, config=SMALL_VQGAN, bf16=False, progress=False)
    plain = train_vqgan(**args)
    again = train_vqgan(**args)
    edged = train_vqgan(**args, edge_weight=8.0)
    assert not plain.training and not any(p.requires_grad for p in plain.parameters())
    norms = plain.codebook.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    w = "decoder.conv_out.weight"
    assert torch.equal(plain.state_dict()[w], again.state_dict()[w])  # seeded
    assert not torch.equal(plain.state_dict()[w], edged.state_dict()[w])
