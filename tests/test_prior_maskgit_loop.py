"""MaskGIT's transformer as the loop's prior plug-in, with tiny random weights: the class from a
name or from the prompt, its sampler rule in the redraws, seeding, and a run killed inside a
redraw resuming bit for bit."""

import pytest
import torch

from vqclip.errors import ConfigError
from vqclip.generate.config import GenerateConfig
from vqclip.generate.run import Run, StepAbandoned
from vqclip.prior.masked import MaskedResampler
from vqclip.prior.maskgit import MaskGITConfig, MaskGITPrior, MaskGITTransformer, arccos_schedule
from vqclip.prior.plugin import PriorExtension, extensions_for

FAST = dict(size=(8, 8), cutn=4, augments=(), noise_fac=0.0, device="cpu", precision="fp32")
NAMES = ("tabby cat", "red fox", "sports car")


def tiny_maskgit(seed: int = 0, n_codes: int = 16) -> MaskGITPrior:
    """A random MaskGIT for a 4x4 grid of `n_codes` codes and 3 named classes."""
    torch.manual_seed(seed)
    config = MaskGITConfig(codebook_size=n_codes, n_classes=3, hidden=16, depth=1, heads=2, mlp=32)
    model = MaskGITTransformer(config.__class__(**{**config.__dict__, "grid": 4}))
    for p in model.parameters():  # a prior with opinions: larger than the default init
        torch.nn.init.normal_(p, std=0.5)
    prior = MaskGITPrior(model.eval().requires_grad_(False), "tiny.pth")
    prior.class_names = NAMES
    return prior


def config(**kwargs) -> GenerateConfig:
    settings = dict(
        prompts=("a red fox in the snow",),
        seed=1,
        iterations=4,
        prior="tiny",
        prior_weight=0.0,
        prior_resample_every=2,
        prior_final_passes=1,
        prior_resample_fraction=0.5,
        prior_sampler="maskgit",
        prior_draw_steps=3,
        prior_class_guidance=2.0,
        prior_guidance=1.0,
    )
    return GenerateConfig(**{**FAST, **settings, **kwargs})


def make(tiny_vqgan, tiny_clip, prior=None, **kwargs) -> Run:
    c = config(**kwargs)
    extensions = extensions_for(c, prior=prior or tiny_maskgit())
    return Run(c, vqgan=tiny_vqgan, clips=[tiny_clip], extensions=extensions)


def test_the_loop_runs_with_a_maskgit_prior_and_is_seeded(tiny_vqgan, tiny_clip):
    run = make(tiny_vqgan, tiny_clip, init="prior", prior_candidates=2)
    (plugin,) = run.extensions
    assert isinstance(plugin.sampler, MaskedResampler) and plugin.sampler.rule == "maskgit"
    assert plugin.sampler.window == (4, 4)
    image = run.run()
    assert torch.isfinite(image).all() and run.final_z is not None
    again = make(tiny_vqgan, tiny_clip, init="prior", prior_candidates=2).run()
    assert torch.equal(image, again)
    other = make(tiny_vqgan, tiny_clip, init="prior", prior_candidates=2, seed=2).run()
    assert not torch.equal(image, other)


def test_the_class_comes_from_a_name_a_number_or_the_prompt(tiny_vqgan, tiny_clip):
    by_name = make(tiny_vqgan, tiny_clip, prior_class="Red Fox").extensions[0]
    assert by_name.labels == [1] and by_name.describe(0)["prior_class_from"] == "given"
    assert make(tiny_vqgan, tiny_clip, prior_class="2").extensions[0].labels == [2]
    with pytest.raises(ConfigError, match="did you mean 'red fox'"):
        make(tiny_vqgan, tiny_clip, prior_class="red fax")
    with pytest.raises(ConfigError, match="out of range 0-2"):
        make(tiny_vqgan, tiny_clip, prior_class=3)
    # from the prompt: the class whose name the tiny CLIP puts nearest, stored for the metadata
    run = make(tiny_vqgan, tiny_clip, prompts=("a red fox", "a sports car"), batch_size=2)
    labels = run.extensions[0].labels
    assert all(label in (0, 1, 2) for label in labels)
    note = run.notes(0)
    assert note["prior_class"] == labels[0] and note["prior_class_name"] == NAMES[labels[0]]


def test_a_prompt_naming_no_class_draws_with_the_no_class_token(tiny_vqgan, tiny_clip):
    prior = tiny_maskgit()
    prior.class_threshold = 2.0  # above any probability: no prompt names a class clearly enough
    run = make(tiny_vqgan, tiny_clip, prior=prior)
    assert run.extensions[0].labels == [None]
    assert run.notes(0)["prior_class"] is None
    assert run.notes(0)["prior_class_from"].startswith("no class named")
    tokens = prior._class_tokens([None], 1)
    assert tokens == [prior.transformer.config.no_class_token]


def test_maskgit_rule_keeps_their_arccos_counts_and_grows_class_guidance():
    prior = tiny_maskgit()
    codebook = torch.randn(16, 4)
    sampler = MaskedResampler(
        prior, 16, (4, 4), codebook, steps=8, class_guidance=4.0, rule="maskgit"
    )
    total = torch.tensor([[256.0], [16.0]])
    counts = arccos_schedule(256, 8)
    left = [int(sampler._left(total, total, s)[0]) for s in range(8)]
    assert left == [256 - sum(counts[: s + 1]) for s in range(7)] + [0]
    assert int(sampler._left(total, total, 7)[1]) == 0
    assert [sampler._class_scale(s) for s in (0, 7)] == [1.0, 4.0]
    plain = MaskedResampler(prior, 16, (4, 4), codebook, steps=8, class_guidance=4.0)
    assert plain._class_scale(0) == 4.0  # vqclip's rule: constant


class Interrupting(PriorExtension):
    """Raises KeyboardInterrupt inside the redraw of step `at` (after the optimiser's update)."""

    at = 2

    def resample(self, run):
        if run.step_index == self.at and not getattr(self, "interrupted", False):
            self.interrupted = True
            raise KeyboardInterrupt
        super().resample(run)


def test_a_run_killed_inside_a_redraw_resumes_bit_for_bit(tiny_vqgan, tiny_clip, tmp_path):
    whole = make(tiny_vqgan, tiny_clip)
    whole.run()

    c = config()
    killed = Run(
        c,
        vqgan=tiny_vqgan,
        clips=[tiny_clip],
        extensions=[
            Interrupting(extensions_for(c, prior=tiny_maskgit())[0].settings, tiny_maskgit())
        ],
    )
    killed.step()
    saved = killed.save_checkpoint(tmp_path)  # the last step boundary before the kill
    with pytest.raises(KeyboardInterrupt):
        killed.step()
    assert killed.state_dict()["step"] == 1  # the step of the redraw is undone

    from vqclip.generate.checkpoint import load_run_state

    resumed = make(tiny_vqgan, tiny_clip)
    resumed.load_state_dict(load_run_state(saved.parent))
    assert resumed.step_index == 1
    resumed.run()
    assert torch.equal(resumed.z, whole.z) and torch.equal(resumed.final_z, whole.final_z)
    assert torch.equal(resumed.image(), whole.image())
    killed.run()  # the killed run itself goes on as if it never stopped
    assert torch.equal(killed.image(), whole.image())


def test_a_stop_asked_for_inside_a_redraw_gives_it_up_after_the_round(
    tiny_vqgan, tiny_clip, monkeypatch
):
    """`should_stop` turning true inside a redraw ends it after the round under way (not after
    its 3 rounds); the step is undone and the run goes on to the unbroken run's image."""
    whole = make(tiny_vqgan, tiny_clip)
    whole.run()
    run = make(tiny_vqgan, tiny_clip)
    run.step()
    draws = []
    real = MaskedResampler._draw

    def counted(self, logits, generator):
        draws.append(run.step_index)
        return real(self, logits, generator)

    monkeypatch.setattr(MaskedResampler, "_draw", counted)
    run.should_stop = lambda: bool(draws)
    with pytest.raises(StepAbandoned):
        run.step()  # step 2 redraws: 3 rounds of 2 draws (a tentative one for the guides)
    assert draws == [2, 2] and run.step_index == 1 and run.at_step_boundary
    run.should_stop = None
    assert torch.equal(run.run(), whole.image())


def test_a_stop_asked_for_during_a_start_drawn_from_the_prior_is_prompt(
    tiny_vqgan, tiny_clip, monkeypatch, tmp_path
):
    """A start drawn from the prior (`init="prior"`) happens while the run is built; a stop
    asked for then ends the draw after the round under way, and the job ends "stopped" with
    no step and no image, instead of drawing every candidate first."""
    from vqclip.jobs import ModelCache, execute_job

    draws = []
    real = MaskedResampler._draw

    def counted(self, logits, generator):
        draws.append(1)
        return real(self, logits, generator)

    monkeypatch.setattr(MaskedResampler, "_draw", counted)
    c = config(init="prior", prior_candidates=2)
    extensions = extensions_for(c, prior=tiny_maskgit())
    with pytest.raises(StepAbandoned):
        Run(c, vqgan=tiny_vqgan, clips=[tiny_clip], extensions=extensions,
            should_stop=lambda: bool(draws))  # fmt: skip
    assert len(draws) == 2  # one round (a tentative draw for the guides), not 3 rounds
    draws.clear()
    models = ModelCache(
        loader=lambda config: (tiny_vqgan, [tiny_clip]), prior_loader=lambda *a: tiny_maskgit()
    )
    result = execute_job(c, tmp_path / "job", models=models, should_stop=lambda: bool(draws))
    assert result.status == "stopped" and result.steps == 0 and not result.images
    assert len(draws) == 2


def test_a_resumed_job_makes_no_start_of_its_own(tiny_vqgan, tiny_clip, monkeypatch, tmp_path):
    """A checkpoint holds the start: resuming a run begun from the prior (`init="prior"`) draws
    no new start (minutes at real sizes) and still ends with the unbroken run's image."""
    import numpy as np
    from PIL import Image

    from vqclip.jobs import ModelCache, execute_job

    def models():
        return ModelCache(
            loader=lambda config: (tiny_vqgan, [tiny_clip]), prior_loader=lambda *a: tiny_maskgit()
        )

    c = config(init="prior", prior_candidates=2)
    whole = execute_job(c, tmp_path / "whole", models=models())
    steps = []  # stop once a step is done (asked during the start, True would stop it there)
    stopped = execute_job(
        c,
        tmp_path / "part",
        models=models(),
        should_stop=lambda: bool(steps),
        on_step=lambda step, run: steps.append(step.index),
    )
    assert stopped.status == "stopped" and stopped.steps == 1
    starts = []
    real = PriorExtension.start
    monkeypatch.setattr(
        PriorExtension, "start", lambda self, run: starts.append(1) or real(self, run)
    )
    again = execute_job(c, tmp_path / "part", models=models())
    assert again.status == "done" and starts == []
    pixels = [np.asarray(Image.open(r.images[0])) for r in (whole, again)]
    assert np.array_equal(*pixels)
