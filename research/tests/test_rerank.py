"""Best-of-N reranking: scores are the guides' weighted similarity on the whole image."""

import pytest
import torch
import torch.nn.functional as F

from research.toy.rerank import best_of, guide_scores
from vqclip.errors import ConfigError


def _sim(clip, images, text):
    view = F.interpolate(images, size=(clip.input_size,) * 2, mode="bilinear", antialias=True)
    img = F.normalize(clip.encode_image(view), dim=-1)
    return img @ F.normalize(clip.encode_text_str([text]), dim=-1)[0]


@pytest.fixture
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_score_is_the_weighted_similarity_averaged_over_guides(small_guide, small_guide_b, images):
    got = guide_scores([small_guide, small_guide_b], images, ["a red circle"])
    want = (
        _sim(small_guide, images, "a red circle") + _sim(small_guide_b, images, "a red circle")
    ) / 2
    assert torch.allclose(got, want, atol=1e-5)
    # A negative weight pushes away, as in the loss; weights are normalised by their sum.
    mixed = guide_scores([small_guide], images, ["a red circle:3|clutter:-1"])
    want = (
        3 * _sim(small_guide, images, "a red circle") - _sim(small_guide, images, "clutter")
    ) / 4
    assert torch.allclose(mixed, want, atol=1e-5)


def test_each_image_is_scored_against_its_own_prompt(small_guide, images):
    prompts = ["a red circle", "clutter", "a blue star"]
    got = guide_scores([small_guide], images, prompts)
    for i, p in enumerate(prompts):
        assert torch.allclose(got[i], _sim(small_guide, images[i : i + 1], p)[0], atol=1e-5)
    with pytest.raises(ConfigError, match="one per image"):
        guide_scores([small_guide], images, prompts[:2])


def test_best_of_picks_the_top_candidate_of_each_group():
    # Candidate-major: image c * groups + g is candidate c of group g (2 groups x 3 candidates).
    scores = torch.tensor([0.1, 0.9, 0.5, 0.2, 0.3, 0.4])
    assert best_of(scores, groups=2, candidates=3).tolist() == [2, 1]
    with pytest.raises(ConfigError, match="6 scores"):
        best_of(scores, groups=4, candidates=2)
