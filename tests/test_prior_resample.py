"""Prior-guided token resampling and the prior start (tiny random transformers)."""

import pytest
import torch

from vqclip.errors import ConfigError
from vqclip.generate import GenerateConfig, Run
from vqclip.prior.io import Condition, TokenPrior
from vqclip.prior.plugin import extensions_for
from vqclip.prior.resample import TokenResampler
from vqclip.prior.transformer import TokenTransformer, TransformerConfig

FAST = dict(size=(32, 32), cutn=4, augments=(), noise_fac=0.0, device="cpu", precision="fp32")


def tiny_prior(block: int = 17, seed: int = 0) -> TokenPrior:
    torch.manual_seed(seed)
    gpt = TokenTransformer(TransformerConfig(16, block, 1, 2, 8)).eval().requires_grad_(False)
    return TokenPrior(gpt, Condition("sos"), "tiny")


def always(token: int) -> TokenPrior:
    """A prior that predicts `token` after anything: ln_f outputs a constant that only the head's
    row of `token` reads."""
    prior = tiny_prior()
    gpt = prior.transformer
    with torch.no_grad():
        gpt.ln_f.weight.zero_()
        gpt.ln_f.bias.fill_(1.0)
        gpt.head.weight.zero_()
        gpt.head.weight[token] = 5.0  # logit 40 against 0: p(token) ~ 1 - 1e-16
    return prior


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shapes_and_windows():
    sampler = TokenResampler(tiny_prior(), 16, (6, 5))
    assert sampler.window == (4, 4)  # 17 positions: the start token and 16 image tokens
    idx = torch.randint(16, (3, 6, 5), generator=gen(0))
    s = sampler.surprisal(idx)
    assert s.shape == (3, 6, 5) and torch.isfinite(s).all() and (s > 0).all()
    mask = sampler.least_likely(idx, 0.2)
    assert mask.shape == (3, 6, 5) and mask.flatten(1).sum(1).tolist() == [6, 6, 6]
    # the chosen tokens are the most surprising ones of each image
    for b in range(3):
        assert s[b][mask[b]].min() >= s[b][~mask[b]].max()
    drawn = sampler.sample(2, gen(0))
    assert drawn.shape == (2, 6, 5) and drawn.dtype == torch.long
    assert drawn.min() >= 0 and drawn.max() < 16


def test_redraw_changes_only_the_chosen_tokens_and_follows_the_prior():
    sampler = TokenResampler(always(3), 16, (6, 5))
    idx = torch.randint(16, (2, 6, 5), generator=gen(1))
    idx[idx == 3] = 4
    idx[0, 2, 2] = 3  # the one token this prior expects: least surprising
    s = sampler.surprisal(idx)
    assert s[0, 2, 2] < 1e-6 and (s.flatten()[idx.flatten() != 3] > 30).all()
    mask = torch.zeros(2, 6, 5, dtype=torch.bool)
    mask[0, 0, 1] = mask[0, 5, 4] = mask[1, 3, 0] = True  # (5, 4): only in the last window
    out = sampler.redraw(idx, mask, gen(0))
    assert torch.equal(out[~mask], idx[~mask])
    assert out[mask].tolist() == [3, 3, 3]
    assert not sampler.least_likely(idx, 29 / 30)[0, 2, 2]  # the likely token is kept


def test_redraw_is_seeded():
    sampler = TokenResampler(tiny_prior(), 16, (4, 4))
    idx = torch.randint(16, (4, 4, 4), generator=gen(2))
    mask = sampler.least_likely(idx, 0.5)
    a, b = sampler.redraw(idx, mask, gen(7)), sampler.redraw(idx, mask, gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, sampler.redraw(idx, mask, gen(8)))


def test_bad_values_are_clear_errors():
    sampler = TokenResampler(tiny_prior(), 16, (4, 4))
    idx = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="fraction"):
        sampler.least_likely(idx, 0.0)
    with pytest.raises(ConfigError, match="expected"):
        sampler.surprisal(torch.zeros(1, 5, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="mask"):
        sampler.redraw(idx, torch.ones(1, 4, 3, dtype=torch.bool), gen(0))
    with pytest.raises(ConfigError, match="another VQGAN"):
        TokenResampler(tiny_prior(), 32, (4, 4))
    with pytest.raises(ConfigError, match="temperature=0"):
        TokenResampler(tiny_prior(), 16, (4, 4), temperature=0)
    base = dict(prompts=("a red circle",), seed=1)
    with pytest.raises(ConfigError, match="prior_resample_every=2: needs a token prior"):
        GenerateConfig(**base, prior_resample_every=2)
    with pytest.raises(ConfigError, match="init='prior': needs a token prior"):
        GenerateConfig(**base, init="prior")
    for fraction in (0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="prior_resample_fraction"):
            GenerateConfig(**base, prior="toy_prior", prior_resample_fraction=fraction)
    with pytest.raises(ConfigError, match="prior_draw_temperature=0"):
        GenerateConfig(**base, prior="toy_prior", prior_draw_temperature=0)
    with pytest.raises(ConfigError, match="prior_resample_every=-1"):
        GenerateConfig(**base, prior="toy_prior", prior_resample_every=-1)


def make(tiny_vqgan, tiny_clip, **kwargs):
    config = GenerateConfig(**{**FAST, "prompts": ("a red circle",), "seed": 1, **kwargs})
    return Run(
        config,
        vqgan=tiny_vqgan,
        clips=[tiny_clip],
        extensions=extensions_for(config, prior=tiny_prior()),
    )


def test_resampling_in_the_loop_sets_codes_and_zeroes_their_momentum(tiny_vqgan, tiny_clip):
    """After the same first step, a run that resamples differs from one that does not only at
    the redrawn positions, where z is a code vector and Adam's first moment is zero; the second
    moment is kept everywhere."""
    common = dict(prior="tiny", prior_weight=0.0, iterations=4, batch_size=2)
    plain = make(tiny_vqgan, tiny_clip, **common)
    resampled = make(tiny_vqgan, tiny_clip, prior_resample_every=1, **common)
    assert plain.extensions[0].loss is None  # weight 0: resampling alone, no loss term
    plain.step(), resampled.step()
    changed = (plain.z != resampled.z).any(1)  # (B, h, w)
    n = changed[0].numel()
    assert 0 < changed.sum() <= 2 * round(0.1 * n)
    _, idx = tiny_vqgan.quantize(resampled.z)
    codes = tiny_vqgan.codebook[idx].permute(0, 3, 1, 2)
    where = changed[:, None].expand_as(codes)
    assert torch.equal(resampled.z[where], codes[where])
    a, b = plain.optimiser.state[plain.z], resampled.optimiser.state[resampled.z]
    assert (b["exp_avg"][where] == 0).all() and (a["exp_avg"][where] != 0).any()
    assert torch.equal(a["exp_avg"][~where], b["exp_avg"][~where])
    assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_resampling_run_is_seeded_and_resumes_bit_for_bit(tiny_vqgan, tiny_clip, tmp_path):
    from vqclip.generate import load_run_state

    kwargs = dict(prior="tiny", prior_resample_every=2, prior_resample_fraction=0.3, iterations=6)
    unbroken = make(tiny_vqgan, tiny_clip, **kwargs).run()
    assert torch.equal(make(tiny_vqgan, tiny_clip, **kwargs).run(), unbroken)
    first = make(tiny_vqgan, tiny_clip, **kwargs)
    for step in first.iterate():
        if step.index == 4:
            break
    path = first.save_checkpoint(tmp_path)
    resumed = make(tiny_vqgan, tiny_clip, **kwargs)
    resumed.load_state_dict(load_run_state(path.parent))
    assert torch.equal(resumed.run(), unbroken)


def test_final_passes_redraw_after_the_last_step_only(tiny_vqgan, tiny_clip):
    """--prior-final-passes N: after the last step the run resamples N times more, from the
    state the last step left (3 passes equal 3 resamplings by hand from that state, which the
    run keeps), and at no other step; with or without resampling every N steps. The image is
    the passes' latent."""
    common = dict(prior="tiny", prior_weight=0.0, prior_resample_fraction=0.3, iterations=4)
    for every in (2, 0):
        one = make(
            tiny_vqgan, tiny_clip, prior_resample_every=every, prior_final_passes=1, **common
        )
        three = make(
            tiny_vqgan, tiny_clip, prior_resample_every=every, prior_final_passes=3, **common
        )
        for a, _ in zip(one.iterate(), three.iterate(), strict=True):
            assert torch.equal(one.z, three.z), a.index  # the loop's own state: the same
        assert not torch.equal(one.final_z, three.final_z)
        assert torch.equal(three.image(), three.image(three.final_z))
        assert not torch.equal(three.image(), three.image(three.z))
        for _ in range(3):
            one.extensions[0].resample(one)
        assert torch.equal(one.z, three.final_z)


def test_a_run_with_final_passes_continued_is_the_longer_run(tiny_vqgan, tiny_clip, tmp_path):
    """A finished run given more steps (a job's "continue": its checkpoint with a larger total)
    goes on from its last step, not from its final passes, and ends as the longer run does; a
    finished run resumed as it is shows its final passes' image."""
    from vqclip.generate.checkpoint import load_run_state

    common = dict(prior="tiny", prior_weight=0.0, prior_resample_fraction=0.3)
    common |= dict(prior_resample_every=2, prior_final_passes=2, prior_candidates=2)
    short = make(tiny_vqgan, tiny_clip, iterations=4, **common)
    short_image = short.run()
    state = load_run_state(short.save_checkpoint(tmp_path).parent)
    same = make(tiny_vqgan, tiny_clip, iterations=4, **common)
    same.load_state_dict(state)
    assert torch.equal(same.image(), short_image)

    state["config"] = short.config.replace(iterations=7).to_dict()
    continued = make(tiny_vqgan, tiny_clip, iterations=7, **common)
    continued.load_state_dict(state)
    assert continued.final_z is None and torch.equal(continued.image(), short.image(short.z))
    longer = make(tiny_vqgan, tiny_clip, iterations=7, **common).run()
    assert torch.equal(continued.run(), longer)
    assert not torch.equal(longer, short_image)
    with pytest.raises(ConfigError, match="prior_final_passes=1: needs a token prior"):
        GenerateConfig(prompts=("a",), seed=1, prior_final_passes=1)
    with_candidates = GenerateConfig(
        prompts=("a",), seed=1, prior="toy_prior", prior_final_passes=1, prior_candidates=4
    )
    assert with_candidates.prior_candidates == 4


def test_prior_start_is_a_seeded_sample_of_codes(tiny_vqgan, tiny_clip):
    run = make(tiny_vqgan, tiny_clip, prior="tiny", init="prior", iterations=1)
    again = make(tiny_vqgan, tiny_clip, prior="tiny", init="prior", iterations=1)
    other = make(tiny_vqgan, tiny_clip, prior="tiny", init="prior", iterations=1, seed=2)
    assert torch.equal(run.z0, again.z0) and not torch.equal(run.z0, other.z0)
    _, idx = tiny_vqgan.quantize(run.z0)
    assert torch.equal(run.z0, tiny_vqgan.codebook[idx].permute(0, 3, 1, 2))
    random = make(tiny_vqgan, tiny_clip, prior="tiny", iterations=1)
    assert not torch.equal(run.z0, random.z0)


def test_the_options_reach_the_command_line_and_the_metadata():
    from vqclip.cli import build_parser
    from vqclip.cli.generate import config_from_args

    args = build_parser().parse_args(
        ["generate", "a circle", "--prior", "toy_prior", "--prior-resample-every", "5",
         "--prior-resample-fraction", "0.2", "--init", "prior", "-sd", "1"]
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.prior_resample_every, config.prior_resample_fraction) == (5, 0.2)
    assert config.init == "prior"
    assert GenerateConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("n_unmasked", [0, 3])
def test_the_key_value_cache_equals_the_whole_sequence(n_unmasked):
    torch.manual_seed(0)
    gpt = TokenTransformer(TransformerConfig(16, 17, 2, 2, 8, n_unmasked)).eval()
    idx = torch.randint(16, (2, 12))
    logits, past = gpt.extend(idx[:, :4])
    parts = [logits]
    for t in range(4, 12):
        logits, past = gpt.extend(idx[:, t : t + 1], past)
        parts.append(logits)
    assert torch.allclose(torch.cat(parts, dim=1), gpt(idx), atol=1e-5)
    with pytest.raises(ConfigError, match="block_size"):
        gpt.extend(torch.zeros(2, 6, dtype=torch.long), past)


def test_prior_candidates_keep_the_one_the_guides_like_best(tiny_vqgan, tiny_clip):
    run = make(tiny_vqgan, tiny_clip, prior="tiny", init="prior", prior_candidates=6, iterations=1)
    # the run's generator is seeded with the seed and first drawn for the candidates
    candidates = run.extensions[0].sampler.sample(6, gen(1))
    image = run.image(tiny_vqgan.codebook[candidates].permute(0, 3, 1, 2))
    losses = run.whole_image_loss(image, 0)
    assert losses.unique().numel() == 6  # the guides tell the candidates apart
    _, kept = tiny_vqgan.quantize(run.z0)
    assert torch.equal(kept[0], candidates[losses.argmin()])
    with pytest.raises(ConfigError, match="prior_candidates=4: only where the prior draws"):
        GenerateConfig(prompts=("a red circle",), prior="tiny", prior_candidates=4)


def test_each_resampling_keeps_the_redraw_the_guides_like_best(tiny_vqgan, tiny_clip):
    """With K candidates a resampling redraws each image K times from the same generator state
    and keeps, at the redrawn positions, the redraw whose whole image the guides score best."""
    K = 5
    run = make(
        tiny_vqgan,
        tiny_clip,
        prior="tiny",
        prior_weight=0.0,
        prior_resample_every=1,
        prior_resample_fraction=0.5,
        prior_candidates=K,
        batch_size=2,
        prompts=("a red circle", "a blue square"),
    )
    _, before = tiny_vqgan.quantize(run.z.detach())
    mask = run.extensions[0].sampler.least_likely(before, 0.5)
    state = run.rng.get_state()
    run.extensions[0].resample(run)
    _, after = tiny_vqgan.quantize(run.z.detach())
    assert torch.equal(after[~mask], before[~mask])  # only the chosen tokens change
    g = torch.Generator().manual_seed(0)
    g.set_state(state)
    for b in range(2):
        draws = run.extensions[0].sampler.redraw(
            before[b : b + 1].repeat(K, 1, 1), mask[b : b + 1].repeat(K, 1, 1), g
        )
        image = run.image(tiny_vqgan.codebook[draws].permute(0, 3, 1, 2))
        losses = run.whole_image_loss(image, b)
        assert losses.unique().numel() > 1  # the pick matters
        assert torch.equal(after[b], draws[losses.argmin()])


def test_a_low_draw_temperature_draws_the_likeliest_tokens():
    prior = tiny_prior()
    cold = TokenResampler(prior, 16, (4, 4), temperature=0.01).sample(8, gen(0))
    warm = TokenResampler(prior, 16, (4, 4)).sample(8, gen(0))
    cold_nll = TokenResampler(prior, 16, (4, 4)).surprisal(cold).mean()
    warm_nll = TokenResampler(prior, 16, (4, 4)).surprisal(warm).mean()
    assert cold_nll < warm_nll - 0.5
