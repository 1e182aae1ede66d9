"""Masked (bidirectional) token priors: scoring given the neighbours, MaskGIT draws, the guides'
steering, the loss, the loop, and the file round trip (tiny random transformers)."""

import dataclasses

import pytest
import torch

from vqclip.errors import ConfigError
from vqclip.generate import GenerateConfig, Run
from vqclip.generate.config import build_config
from vqclip.prior.io import Condition, TokenPrior, load_prior, save_prior
from vqclip.prior.loss import PriorLoss
from vqclip.prior.masked import MaskedResampler
from vqclip.prior.plugin import extensions_for
from vqclip.prior.transformer import TokenTransformer, TransformerConfig
from vqclip.weights.registry import resolve_pair

FAST = dict(size=(32, 32), cutn=4, augments=(), noise_fac=0.0, device="cpu", precision="fp32")
N_CODES = 16


def tiny_masked(side: int = 4, n_codes: int = N_CODES, seed: int = 0) -> TokenPrior:
    torch.manual_seed(seed)
    block = side * side
    config = TransformerConfig(n_codes + 1, block, 1, 2, 8, n_unmasked=block)
    gpt = TokenTransformer(config).eval().requires_grad_(False)
    return TokenPrior(gpt, Condition("masked", mask_token=n_codes), "tiny masked")


def always(token: int) -> TokenPrior:
    """A masked prior that predicts `token` everywhere, whatever it reads."""
    prior = tiny_masked()
    gpt = prior.transformer
    with torch.no_grad():
        gpt.ln_f.weight.zero_()
        gpt.ln_f.bias.fill_(1.0)
        gpt.head.weight.zero_()
        gpt.head.weight[token] = 5.0
    return prior


def uniform() -> TokenPrior:
    """A masked prior with no opinion: every code equally likely."""
    prior = tiny_masked()
    with torch.no_grad():
        prior.transformer.head.weight.zero_()
    return prior


def codebook(seed: int = 0) -> torch.Tensor:
    return torch.randn(N_CODES, 3, generator=gen(seed))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shapes_and_windows():
    sampler = MaskedResampler(tiny_masked(), N_CODES, (6, 5), codebook())
    assert sampler.window == (4, 4)
    idx = torch.randint(N_CODES, (3, 6, 5), generator=gen(0))
    lp = sampler.log_probs(idx)
    assert lp.shape == (3, 6, 5, N_CODES)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3, 6, 5), atol=1e-5)
    s = sampler.surprisal(idx)
    mask = sampler.least_likely(idx, 0.2)
    assert mask.flatten(1).sum(1).tolist() == [6, 6, 6]
    for b in range(3):
        assert s[b][mask[b]].min() >= s[b][~mask[b]].max()
    drawn = sampler.sample(2, gen(0))
    assert drawn.shape == (2, 6, 5) and drawn.min() >= 0 and drawn.max() < N_CODES
    with pytest.raises(ConfigError, match="predicts 16 codes but the VQGAN has 32"):
        MaskedResampler(tiny_masked(), 32, (4, 4), torch.randn(32, 3))


def test_a_grid_smaller_than_the_window_is_read_at_its_centre_among_mask_tokens():
    """A 2x2 grid is the middle of the prior's 4x4 window, the rest mask tokens: each position
    is scored by the pass that masks its quarter of the window, and draws and the guides only
    ever see the 2x2 grid."""
    prior = tiny_masked()
    sampler = MaskedResampler(prior, N_CODES, (2, 2), codebook(), guidance=1.0)
    idx = torch.randint(N_CODES, (1, 2, 2), generator=gen(3))
    lp = sampler.log_probs(idx)
    window = torch.full((1, 4, 4), N_CODES)
    window[:, 1:3, 1:3] = idx
    window[:, 1, 1] = N_CODES  # the quarter [1::2, 1::2] of the window holds position (0, 0)
    want = torch.log_softmax(prior.transformer(window.flatten(1))[0, 5, :N_CODES], -1)
    assert torch.allclose(lp[0, 0, 0], want, atol=1e-5)
    seen = []

    def guide(grid):
        seen.append(tuple(grid.shape))
        return torch.randn(grid.shape[0], 3, *grid.shape[1:], generator=gen(len(seen)))

    mask = torch.tensor([[[True, False], [False, True]]])
    drawn = sampler.redraw(idx, mask, gen(0), guide)
    assert drawn.shape == (1, 2, 2) and drawn.max() < N_CODES
    assert torch.equal(drawn[~mask], idx[~mask])
    assert seen and set(seen) == {(1, 2, 2)}


def test_a_token_is_scored_without_seeing_itself_but_with_its_neighbours():
    sampler = MaskedResampler(tiny_masked(), N_CODES, (4, 4), codebook())
    idx = torch.randint(N_CODES, (1, 4, 4), generator=gen(2))
    other = idx.clone()
    other[0, 1, 2] = (idx[0, 1, 2] + 1) % N_CODES
    a, b = sampler.log_probs(idx), sampler.log_probs(other)
    assert torch.allclose(a[0, 1, 2], b[0, 1, 2])  # its own token is masked when it is scored
    assert not torch.allclose(a[0, 1, 1], b[0, 1, 1])  # its neighbour's prediction reads it


def test_redraw_changes_only_the_chosen_tokens_follows_the_prior_and_is_seeded():
    sampler = MaskedResampler(always(3), N_CODES, (6, 5), codebook())
    idx = torch.randint(N_CODES, (2, 6, 5), generator=gen(1))
    idx[idx == 3] = 4
    mask = torch.rand(2, 6, 5, generator=gen(3)) < 0.4
    new = sampler.redraw(idx, mask, gen(0))
    assert torch.equal(new[~mask], idx[~mask]) and (new[mask] == 3).all()
    assert (sampler.surprisal(idx) > 30).all()  # nothing but 3 fits anywhere
    warm = MaskedResampler(tiny_masked(), N_CODES, (6, 5), codebook(), temperature=2.0)
    everything = torch.ones_like(mask)
    first = warm.redraw(idx, everything, gen(5))
    assert torch.equal(first, warm.redraw(idx, everything, gen(5)))
    assert not torch.equal(first, warm.redraw(idx, everything, gen(6)))


def test_guidance_steers_the_draws_toward_the_codes_the_guides_want():
    book = codebook()
    want = torch.randn(3, generator=gen(7))
    best = int((book @ want).argmax())  # the code that lowers the loss most, to first order

    def guide(grid):  # the loss falls along `want`: its gradient is -want everywhere
        return -want.view(1, 3, 1, 1).expand(len(grid), 3, *grid.shape[1:])

    free = MaskedResampler(uniform(), N_CODES, (4, 4), book, guidance=0.0)
    steered = MaskedResampler(uniform(), N_CODES, (4, 4), book, guidance=50.0)
    assert (free.sample(4, gen(0), guide) == best).float().mean() < 0.3
    assert (steered.sample(4, gen(0), guide) == best).all()
    calls = []
    steered.sample(1, gen(0), lambda g: calls.append(g.clone()) or guide(g))
    assert len(calls) == steered.steps  # one gradient a round, at a grid of codes
    assert all(c.shape == (1, 4, 4) and c.max() < N_CODES for c in calls)


def test_the_masked_loss_prefers_the_token_its_neighbours_call_for():
    book = torch.nn.functional.normalize(codebook(), dim=1)
    loss = PriorLoss(always(3), book, (4, 4))
    at = lambda token: book[torch.full((1, 4, 4), token)].permute(0, 3, 1, 2)  # noqa: E731
    z = at(5).requires_grad_(True)
    value = loss(z)
    assert value.shape == (1,) and loss(at(3)) < value
    value.sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_a_masked_prior_round_trips_through_its_files(tmp_path):
    prior = tiny_masked(seed=3)
    save_prior(prior, tmp_path / "m.safetensors", half=False)
    back = load_prior(tmp_path / "m.safetensors")
    assert back.condition == prior.condition and back.transformer.config == prior.transformer.config
    idx = torch.randint(N_CODES, (2, 4, 4), generator=gen(4))
    a = MaskedResampler(prior, N_CODES, (4, 4), codebook()).log_probs(idx)
    b = MaskedResampler(back, N_CODES, (4, 4), codebook()).log_probs(idx)
    assert torch.allclose(a, b)


def make(tiny_vqgan, tiny_clip, **kwargs):
    config = GenerateConfig(**{**FAST, "prompts": ("a red circle",), "seed": 1, **kwargs})
    side = config.size[0] // tiny_vqgan.downsample_factor
    n_codes = tiny_vqgan.codebook.shape[0]
    return Run(
        config,
        vqgan=tiny_vqgan,
        clips=[tiny_clip],
        extensions=extensions_for(config, prior=tiny_masked(side, n_codes)),
    )


def test_the_loop_draws_a_guided_start_and_resamples_with_a_masked_prior(tiny_vqgan, tiny_clip):
    kwargs = dict(
        prior="tiny", init="prior", prior_guidance=2.0, prior_candidates=2, prior_draw_steps=3
    )
    run = make(tiny_vqgan, tiny_clip, **kwargs, prior_resample_every=1, iterations=2)
    assert (
        isinstance(run.extensions[0].sampler, MaskedResampler)
        and run.extensions[0].sampler.steps == 3
    )
    _, idx = tiny_vqgan.quantize(run.z0)
    assert torch.equal(run.z0, tiny_vqgan.codebook[idx].permute(0, 3, 1, 2))
    unguided = make(tiny_vqgan, tiny_clip, **{**kwargs, "prior_guidance": 0.0}, iterations=2)
    assert not torch.equal(run.z0, unguided.z0)  # the guides changed the draws
    image = run.run()
    again = make(tiny_vqgan, tiny_clip, **kwargs, prior_resample_every=1, iterations=2).run()
    assert torch.equal(image, again)
    assert run.extensions[0].loss is not None and run.extensions[0].loss.masked is not None


def test_the_options_are_declared_and_checked():
    from vqclip.cli import build_parser

    args = build_parser().parse_args(
        ["generate", "-p", "x", "--prior", "p", "--prior-guidance", "2", "--prior-draw-steps", "4"]
    )
    assert args.prior_guidance == 2.0 and args.prior_draw_steps == 4
    with pytest.raises(ConfigError, match=r"prior_guidance=1\.0: needs a token prior"):
        GenerateConfig(prompts=("x",), prior_guidance=1.0)
    with pytest.raises(ConfigError, match="prior_draw_steps=0"):
        GenerateConfig(prompts=("x",), prior="p", prior_draw_steps=0)


def test_the_shipped_toy_masked_prior_knows_world_grids_from_random_ones():
    from vqclip.prior.resolve import load_prior_by_name
    from vqclip.toy.models import load_toy_models
    from vqclip.toy.world import sample_images
    from vqclip.vqgan.quantize import nearest_code

    prior = load_prior_by_name("toy_masked_prior")
    assert prior.condition.kind == "masked" and prior.condition.mask_token == 512
    assert prior.transformer.config.n_unmasked == prior.transformer.config.block_size == 256
    vqgan = load_toy_models().vqgan
    images, _ = sample_images(8, gen(123))
    with torch.no_grad():
        world = nearest_code(vqgan.float().encode(images * 2 - 1), vqgan.codebook)
    scorer = MaskedResampler(prior, 512, (16, 16), vqgan.codebook)
    random = torch.randint(512, world.shape, generator=gen(0))
    assert scorer.surprisal(world).mean() < 2.0 < 5.0 < scorer.surprisal(random).mean()


def test_prior_none_turns_off_a_pair_s_prior_and_the_options_that_need_it():
    """A pair whose defaults use a prior brings its prior_* settings only while the prior
    stays; `--prior none` alone gives the plain loop, and the web page's copied command says
    `--prior none` for such a job."""
    from vqclip.generate.config import pair_defaults
    from vqclip.serve.command import generate_command
    from vqclip.weights.registry import ModelPair

    pair = ModelPair("v", ("c",), (("prior", "p"), ("prior_resample_every", 25), ("cutn", 16)))
    assert pair_defaults(pair, {}) == dict(pair.defaults)
    assert pair_defaults(pair, {"prior": "q"})["prior_resample_every"] == 25
    for off in (None, "none", "None", ""):
        assert pair_defaults(pair, {"prior": off}) == {"cutn": 16}
    assert GenerateConfig(prompts=("x",), prior="none").prior is None
    with pytest.raises(ConfigError, match="needs a token prior"):
        GenerateConfig(prompts=("x",), prior="none", prior_resample_every=5)
    assert dict(resolve_pair("toy").defaults)["prior"] == "toy_shape_prior"
    plain = build_config({"prompt": "x", "model": "toy", "prior": "none"})
    assert plain.prior is None and plain.prior_resample_every == 0
    assert "--prior none" in generate_command(dataclasses.asdict(plain), "toy")


def tiny_classed(side: int = 4, n_codes: int = N_CODES, names=("circle", "square")) -> TokenPrior:
    """A class-conditional masked prior: class c is token n_codes + 1 + c, before the grid."""
    torch.manual_seed(5)
    block = 1 + side * side
    config = TransformerConfig(n_codes + 1 + len(names), block, 1, 2, 8, n_unmasked=block)
    gpt = TokenTransformer(config).eval().requires_grad_(False)
    attn = gpt.blocks[0].attn
    for weight in (attn.value.weight, attn.proj.weight, gpt.head.weight):
        weight.mul_(5)  # attention strong enough for the class token to move the draws
    condition = Condition("masked", mask_token=n_codes, n_classes=len(names), class_names=names)
    return TokenPrior(gpt, condition, "tiny classed")


def test_a_class_conditional_masked_prior_reads_each_row_s_class():
    prior = tiny_classed()
    sampler = MaskedResampler(prior, N_CODES, (4, 4), codebook())
    idx = torch.randint(N_CODES, (1, 4, 4), generator=gen(2)).repeat(2, 1, 1)
    mixed = sampler.log_probs(idx, [0, 1])
    assert torch.allclose(mixed[0], sampler.log_probs(idx, [0, 0])[0])
    assert torch.allclose(mixed[1], sampler.log_probs(idx, [1, 1])[1])
    assert not torch.allclose(mixed[0], mixed[1], atol=1e-4)  # the class token is read
    # No class: the mask token stands in the class's place.
    unknown = sampler.log_probs(idx, None)
    assert torch.allclose(unknown, sampler.log_probs(idx, [None, None]))
    quarter = torch.zeros(4, 4, dtype=torch.bool)
    quarter[::2, ::2] = True
    tokens = torch.where(quarter, N_CODES, idx[:1]).flatten(1)
    direct = prior.transformer(torch.cat([torch.tensor([[N_CODES]]), tokens], 1))[0, 1:, :N_CODES]
    assert torch.allclose(unknown[0][quarter], direct.log_softmax(-1)[quarter.flatten()], atol=1e-5)
    # The draws follow the class: the same seed draws differently under another class.
    everywhere = torch.ones_like(idx, dtype=torch.bool)
    a = sampler.redraw(idx, everywhere, gen(3), labels=[0, 0])
    b = sampler.redraw(idx, everywhere, gen(3), labels=[1, 1])
    assert torch.equal(a, sampler.redraw(idx, everywhere, gen(3), labels=[0, 0]))
    assert not torch.equal(a, b)
    with pytest.raises(ConfigError, match=r"prior_class=2: must be in \[0, 2\) \(circle, square\)"):
        sampler.log_probs(idx, [2, 0])
    with pytest.raises(ConfigError, match="1 prior classes for 2 token grids"):
        sampler.surprisal(idx, [0])
    plain = MaskedResampler(tiny_masked(), N_CODES, (4, 4), codebook())
    with pytest.raises(ConfigError, match="has no classes: leave prior_class unset"):
        plain.redraw(idx, everywhere, gen(3), labels=[0, 1])


def test_class_names_round_trip_and_are_checked(tmp_path):
    prior = tiny_classed()
    save_prior(prior, tmp_path / "c.safetensors", half=False)
    back = load_prior(tmp_path / "c.safetensors")
    assert back.condition.class_names == ("circle", "square") and back.condition.n_classes == 2
    with pytest.raises(ConfigError, match="1 names for 2 classes"):
        Condition("masked", mask_token=3, n_classes=2, class_names=("a",))
    with pytest.raises(ConfigError, match="expected a list of strings"):
        Condition("masked", mask_token=3, n_classes=1, class_names=(1,))


def test_the_loop_picks_each_image_s_class_from_its_prompt(tiny_vqgan, tiny_clip):
    """With a prior that names its classes and no prior_class, each image's class is the name
    its prompt is nearest to under the CLIP ("a square" is "a square"'s own embedding);
    prior_class, when given, is every image's."""
    n_codes = tiny_vqgan.codebook.shape[0]
    prior = tiny_classed(side=16, n_codes=n_codes)
    settings = dict(
        FAST,
        prompts=("a square", "a circle:2|a square"),
        batch_size=2,
        prior="tiny",
        prior_weight=0.0,
        prior_resample_every=1,
        prior_candidates=2,
        iterations=1,
    )
    run = Run(
        GenerateConfig(**settings),
        vqgan=tiny_vqgan,
        clips=[tiny_clip],
        extensions=extensions_for(GenerateConfig(**settings), prior=prior),
    )
    assert run.extensions[0].labels == [1, 0]
    run.run()  # the resampling reads them, row by row and for each image's candidates
    fixed = GenerateConfig(**settings, prior_class=0)
    assert Run(
        fixed, vqgan=tiny_vqgan, clips=[tiny_clip], extensions=extensions_for(fixed, prior=prior)
    ).extensions[0].labels == [0, 0]
    with pytest.raises(ConfigError, match=r"prior_class 2 is out of range 0-1"):
        Run(
            fixed.replace(prior_class=2),
            vqgan=tiny_vqgan,
            clips=[tiny_clip],
            extensions=extensions_for(fixed.replace(prior_class=2), prior=prior),
        )
    untold = tiny_masked(16, n_codes)
    with pytest.raises(ConfigError, match="prior_class=0: prior tiny masked has no classes"):
        Run(
            fixed,
            vqgan=tiny_vqgan,
            clips=[tiny_clip],
            extensions=extensions_for(fixed, prior=untold),
        )
    negative = GenerateConfig(**{**settings, "prompts": ("a square:-1",), "batch_size": 1})
    assert Run(
        negative,
        vqgan=tiny_vqgan,
        clips=[tiny_clip],
        extensions=extensions_for(negative, prior=prior),
    ).extensions[0].labels == [None]


def test_the_shipped_toy_shape_prior_knows_each_world_grid_s_shape():
    """The shape-conditioned toy prior scores world grids better under their own shape than
    under another one, and still knows them with the shape unknown."""
    from vqclip.prior.resolve import load_prior_by_name
    from vqclip.toy.models import load_toy_models
    from vqclip.toy.world import SHAPES, sample_images
    from vqclip.vqgan.quantize import nearest_code

    prior = load_prior_by_name("toy_shape_prior")
    assert prior.condition.class_names == SHAPES
    vqgan = load_toy_models().vqgan
    images, scenes = sample_images(8, gen(321))
    with torch.no_grad():
        world = nearest_code(vqgan.float().encode(images * 2 - 1), vqgan.codebook)
    scorer = MaskedResampler(prior, 512, (16, 16), vqgan.codebook)
    own = [SHAPES.index(s.shape) for s in scenes]
    other = [(c + 2) % len(SHAPES) for c in own]
    right = scorer.surprisal(world, own).mean()
    assert right + 0.005 < scorer.surprisal(world, other).mean()
    assert scorer.surprisal(world, None).mean() < 2.0


def test_class_guidance_scales_the_change_the_class_makes():
    """Classifier-free guidance: S = 0 reads as the unknown class, S = 1 as the class, and
    S = 3 moves the log-probabilities three times as far from the unknown class's logits."""
    prior = tiny_classed()
    idx = torch.randint(N_CODES, (2, 4, 4), generator=gen(6))

    def logits(scale, labels):
        sampler = MaskedResampler(prior, N_CODES, (4, 4), codebook(), class_guidance=scale)
        return sampler._logits(idx.flatten(1), sampler._labels(labels, 2))

    free, cond = logits(1.0, None), logits(1.0, [0, 1])
    assert torch.allclose(logits(0.0, [0, 1]), free, atol=1e-5)
    assert torch.allclose(logits(3.0, [0, 1]), free + 3 * (cond - free), atol=1e-4)
    assert torch.allclose(logits(3.0, None), free)  # no class: nothing to scale
    with pytest.raises(ConfigError, match=r"prior_class_guidance=2\.0: needs a token prior"):
        GenerateConfig(prompts=("x",), prior_class_guidance=2.0)
