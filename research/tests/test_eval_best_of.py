"""The best-of-N eval variant: one kept candidate per prompt, and whether any was right."""

from __future__ import annotations

import json

import pytest

from research.toy.eval_best_of import main, run_best_of
from vqclip.errors import ConfigError
from vqclip.toy.eval import EvalSettings
from vqclip.toy.models import WEIGHTS_DIR, load_toy_models

needs_weights = pytest.mark.skipif(
    not (WEIGHTS_DIR / "toy_judge.safetensors").is_file(), reason="toy weights not trained yet"
)


@needs_weights
def test_best_of_keeps_one_candidate_per_prompt_and_counts_any_right():
    prompts = ["a red circle on a blue background", "a white star on a black background"]
    settings = EvalSettings(iterations=2, cutn=2, precision="fp32")
    models = load_toy_models()
    result, any_right = run_best_of(models, prompts, "overview", settings, 3, progress=False)
    assert result.images.shape == (2, 3, 64, 64) and [r.prompt for r in result.results] == prompts
    # The kept candidate is one of the three: a kept success implies some candidate succeeded.
    assert all(right or not r.success for r, right in zip(result.results, any_right, strict=True))
    with pytest.raises(ConfigError, match="at least 1"):
        run_best_of(models, prompts, "overview", settings, 0)


@needs_weights
def test_main_writes_the_report(tmp_path):
    out = tmp_path / "best.json"
    argv = ["--best-of", "2", "--every", "30", "--steps", "1", "--cutn", "2", "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["best_of"] == 2
    assert len(report["methods"]["overview"]["per_prompt"]) == 2  # 60 prompts, every 30th
    assert 0 <= report["methods"]["overview"]["any_right"] <= 1
