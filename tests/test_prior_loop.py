"""The prior loss and coarse-to-fine scales inside the loop (tiny random models)."""

import pytest
import torch

from vqclip.errors import ConfigError
from vqclip.generate import GenerateConfig, Run
from vqclip.prior.io import Condition, TokenPrior, save_prior
from vqclip.prior.plugin import extensions_for
from vqclip.prior.transformer import TokenTransformer, TransformerConfig

FAST = dict(size=(32, 32), cutn=4, augments=(), noise_fac=0.0, device="cpu", precision="fp32")


def tiny_prior() -> TokenPrior:
    torch.manual_seed(0)
    gpt = TokenTransformer(TransformerConfig(16, 17, 1, 2, 8)).eval().requires_grad_(False)
    return TokenPrior(gpt, Condition("sos"), "tiny")


def make(tiny_vqgan, tiny_clip, model=None, **kwargs):
    config = GenerateConfig(**{**FAST, "prompts": ("a red circle",), "seed": 1, **kwargs})
    return Run(
        config, vqgan=tiny_vqgan, clips=[tiny_clip], extensions=extensions_for(config, prior=model)
    )


def test_prior_term_is_in_the_losses_and_ramps_in(tiny_vqgan, tiny_clip):
    run = make(tiny_vqgan, tiny_clip, tiny_prior(), prior="tiny", prior_ramp=4, iterations=4)
    steps = list(run.iterate())
    assert all("prior" in s.losses for s in steps)
    plain = make(tiny_vqgan, tiny_clip, iterations=1)
    assert "prior" not in next(plain.iterate()).losses
    # step 1 weighs the prior 1/4, step 4 fully: the ratio is about 4 when the loss moves little
    first, last = steps[0].losses["prior"].item(), steps[-1].losses["prior"].item()
    assert 2.5 < last / first < 6


def test_the_prior_changes_the_image_and_lowers_its_loss(tiny_vqgan, tiny_clip):
    prior = tiny_prior()
    kwargs = dict(prior="tiny", iterations=12, prior_temperature=0.5)
    strong = make(tiny_vqgan, tiny_clip, prior, prior_weight=50.0, **kwargs)
    weak = make(tiny_vqgan, tiny_clip, prior, prior_weight=1e-6, **kwargs)
    strong_losses = [s.losses["prior"].item() / 50 for s in strong.iterate()]
    weak_losses = [s.losses["prior"].item() / 1e-6 for s in weak.iterate()]
    assert strong_losses[-1] < weak_losses[-1]
    assert not torch.equal(strong.image(), weak.image())


def test_a_prior_file_is_loaded_by_path(tiny_vqgan, tiny_clip, tmp_path):
    save_prior(tiny_prior(), tmp_path / "p.safetensors")
    run = make(tiny_vqgan, tiny_clip, prior=str(tmp_path / "p.safetensors"), iterations=1)
    assert run.extensions[0].prior.transformer.config.vocab_size == 16
    with pytest.raises(ConfigError, match="no such file"):
        make(tiny_vqgan, tiny_clip, prior=str(tmp_path / "none.safetensors"), iterations=1)


def test_coarse_to_fine_grows_the_grid_halfway(tiny_vqgan, tiny_clip):
    run = make(tiny_vqgan, tiny_clip, scales=(0.5, 1.0), iterations=5)
    shapes = [(s.index, tuple(s.image.shape[-2:])) for s in run.iterate()]
    # 5 steps over 2 scales: 3 at half size, 2 at full size
    assert shapes == [(1, (16, 16)), (2, (16, 16)), (3, (16, 16)), (4, (32, 32)), (5, (32, 32))]
    assert run.z.shape[-2:] == (16, 16) and run.image().shape[-2:] == (32, 32)


def test_coarse_to_fine_resume_equals_unbroken(tiny_vqgan, tiny_clip, tmp_path):
    from vqclip.generate import load_run_state

    kwargs = dict(scales=(0.5, 1.0), iterations=6, schedule="cosine")
    unbroken = make(tiny_vqgan, tiny_clip, **kwargs).run()
    first = make(tiny_vqgan, tiny_clip, **kwargs)
    for step in first.iterate():
        if step.index == 4:
            break
    path = first.save_checkpoint(tmp_path)
    resumed = make(tiny_vqgan, tiny_clip, **kwargs)
    resumed.load_state_dict(load_run_state(path.parent))
    assert torch.allclose(resumed.run(), unbroken, atol=1e-6)


@pytest.mark.parametrize("scales", [(0.5,), (1.0, 0.5), (0.5, 0.5, 1.0), ()])
def test_bad_scales_are_refused(scales):
    with pytest.raises(ConfigError, match="scales"):
        GenerateConfig(prompts=("a",), scales=scales)


def test_shipped_toy_prior_prefers_world_images_to_random_codes():
    """The toy prior loads by name, fits the toy VQGAN's codebook and finds the codes of world
    images far likelier than random codes (what makes it a prior of the world)."""
    from vqclip.prior.loss import PriorLoss
    from vqclip.prior.resolve import load_prior_by_name
    from vqclip.toy.world import sample_images
    from vqclip.vqgan import load_vqgan
    from vqclip.weights.registry import PACKAGED, PACKAGED_DIR

    prior = load_prior_by_name("toy_prior")
    vqgan = load_vqgan(PACKAGED_DIR / PACKAGED["toy_vqgan"])
    loss = PriorLoss(prior, vqgan.codebook, (16, 16), temperature=0.3)
    images, _ = sample_images(4, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    random_codes = vqgan.codebook[torch.randint(512, (4, 16, 16), generator=g)]
    with torch.no_grad():
        world = loss(vqgan.quantize(vqgan.encode(images * 2 - 1))[0])
        noise = loss(random_codes.permute(0, 3, 1, 2))
    assert world.max() < noise.min() - 2
