"""The toy models: the judge's verdicts, loading, and the shipped weights' figures."""

from __future__ import annotations

import json

import pytest
import torch

from vqclip.errors import ConfigError, WeightsNotFoundError
from vqclip.toy.eval import guide_reading
from vqclip.toy.judge import Judge, Verdict, load_judge, save_judge, score_scenes
from vqclip.toy.models import WEIGHTS_DIR, load_toy_models, toy_paths
from vqclip.toy.world import ATTRIBUTES, sample_images

SHIPPED = (WEIGHTS_DIR / "toy_judge.safetensors").is_file()
needs_weights = pytest.mark.skipif(not SHIPPED, reason="toy weights not trained yet")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_verdict_counts_a_rejected_image_wrong_on_every_attribute():
    attrs = {"shape": "circle", "colour": "red"}
    assert Verdict(True, attrs, 0.1).correct({"shape": "circle"}) == {"shape": True}
    assert Verdict(True, attrs, 0.1).correct({"colour": "blue"}) == {"colour": False}
    assert Verdict(False, attrs, 0.9).correct({"shape": "circle"}) == {"shape": False}


def test_judge_reads_each_image_alone_and_round_trips(tmp_path):
    torch.manual_seed(0)
    judge = Judge(width=8).eval()
    images, _ = sample_images(4, _gen())
    out = judge(images)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        **{k: (4, len(v)) for k, v in ATTRIBUTES.items()},
        "reject": (4,),
    }
    # GroupNorm: an image's verdict does not depend on its batch-mates.
    assert torch.allclose(judge(images[:1])["shape"], out["shape"][:1], atol=1e-5)
    save_judge(judge, tmp_path / "j.safetensors")
    again = load_judge(tmp_path / "j.safetensors")
    assert torch.allclose(again(images)["reject"], out["reject"], atol=1e-2)
    verdicts = again.verdicts(images)
    assert [v.clean for v in verdicts] == (torch.sigmoid(out["reject"]) < 0.5).tolist()
    with pytest.raises(ConfigError, match="64"):
        judge(torch.zeros(1, 3, 32, 32))


def test_score_scenes_counts_what_the_judge_reads_right():
    images, scenes = sample_images(6, _gen(1))

    class Reads:  # a stand-in judge: right on the first four images, refusing the last two
        def verdicts(self, images):
            return [
                Verdict(i < 4, {k: getattr(s, k) for k in ATTRIBUTES}, 0.0)
                for i, s in enumerate(scenes)
            ]

    scores = score_scenes(Reads(), images, scenes)
    assert scores == {**{k: 4 / 6 for k in ATTRIBUTES}, "clean": 4 / 6}


def test_loading_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="judge weights"):
        load_judge(tmp_path / "none.safetensors")
    save_judge(Judge(width=8), tmp_path / "j.safetensors")
    (tmp_path / "j.json").write_text(json.dumps({"format": "something-else", "width": 8}))
    with pytest.raises(ConfigError, match="not a toy judge"):
        load_judge(tmp_path / "j.safetensors")
    with pytest.raises(WeightsNotFoundError, match=r"toy_vqgan\.ckpt"):
        toy_paths(tmp_path)


@needs_weights
def test_shipped_files_load_through_the_public_loaders_and_fit_the_budget():
    from vqclip.weights.resolve import load_clip_by_name, load_vqgan_by_name

    paths = toy_paths()
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir() if p.is_file())
    assert total <= 22_000_000  # 21.6 MB with toy_shape_prior (2026-12-04)
    taming = load_vqgan_by_name(paths["vqgan_ckpt"])  # finds the .yaml beside it
    converted = load_vqgan_by_name(paths["vqgan"])
    for a, b in zip(taming.state_dict().values(), converted.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    norms = converted.codebook.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-2)
    clip = load_clip_by_name(paths["clip_0"])
    assert clip.config.context_length == 24 and clip.input_size == 64


@needs_weights
def test_shipped_judge_and_vqgan_meet_their_gates_on_fresh_images():
    models = load_toy_models()
    images, scenes = sample_images(200, _gen(12345))
    clean = score_scenes(models.judge, images, scenes)
    assert min(clean.values()) >= 0.97
    with torch.no_grad():
        rec = models.vqgan(images * 2 - 1).add(1).div(2).clamp(0, 1)
    # A floor against regressions: the gate (0.97 on every attribute) is not met yet;
    # the shipped VQGAN measured 0.925 (shape) to 0.977 on 1,000 images (docs/toy.md).
    assert min(score_scenes(models.judge, rec, scenes).values()) >= 0.87


@needs_weights
def test_shipped_guides_read_every_attribute_zero_shot():
    images, scenes = sample_images(200, _gen(12345))
    for clip in load_toy_models().clips:
        for name, values in ATTRIBUTES.items():
            truth = torch.tensor([values.index(getattr(s, name)) for s in scenes])
            accuracy = (guide_reading([clip], images, name) == truth).float().mean()
            assert accuracy >= 0.95, (name, float(accuracy))


@needs_weights
@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known gap (issues 5, 22): the plain loop paints fragments the judge refuses (0 of "
    "60 default prompts right); the toy pair's default clean-up by its masked prior makes single "
    "objects, but with blobby outlines and drifting backgrounds (13-17 of 60 right, stars "
    "rarely; docs/toy.md); strict, so CI says when this starts passing",
)
def test_text_steers_the_image():
    """6 prompts drawn by a fixed seed from the default eval list, generated with the shipped
    models by the normal loop: at least 5 must be judged right."""
    from vqclip.toy.eval import DEFAULT_PROMPTS, EvalSettings, run_method

    pick = torch.randperm(len(DEFAULT_PROMPTS), generator=_gen(6))[:6].tolist()
    prompts = [DEFAULT_PROMPTS[i] for i in pick]
    result = run_method(load_toy_models(), prompts, "overview", EvalSettings(), progress=False)
    assert sum(r.success for r in result.results) >= 5, [
        (r.prompt, r.correct) for r in result.results
    ]
