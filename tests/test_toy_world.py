"""The toy world: seeded rendering, visible attributes, captions and the reject class."""

from __future__ import annotations

import pytest
import torch

from vqclip.errors import ConfigError
from vqclip.toy.world import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    IMAGE_SIZE,
    REJECT_KINDS,
    SHAPES,
    Scene,
    all_captions,
    caption_text,
    parse_caption,
    random_caption,
    render,
    render_rejects,
    sample_images,
    sample_scenes,
    satisfies,
    shape_coverage,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _object_mask(image: torch.Tensor, scene: Scene) -> torch.Tensor:
    """Pixels nearer the shape's colour than the background's."""
    fg = torch.tensor(COLOURS[scene.colour]).view(3, 1, 1)
    bg = torch.tensor(BACKGROUNDS[scene.background]).view(3, 1, 1)
    return (image - fg).norm(dim=0) < (image - bg).norm(dim=0)


def test_same_seed_same_images_other_seed_other_images():
    a, sa = sample_images(16, _gen(3))
    b, sb = sample_images(16, _gen(3))
    c, _ = sample_images(16, _gen(4))
    assert sa == sb and torch.equal(a, b)
    assert not torch.equal(a, c)
    ra, ka = render_rejects(16, _gen(5))
    rb, kb = render_rejects(16, _gen(5))
    assert ka == kb and torch.equal(ra, rb)


def test_images_have_the_world_shape_and_range():
    images, scenes = sample_images(8, _gen())
    assert images.shape == (8, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert images.min() >= 0 and images.max() <= 1 and len(scenes) == 8


def test_background_is_never_the_shape_colour():
    scenes = sample_scenes(3000, _gen(1))
    assert all(s.background != s.colour for s in scenes)
    # and every allowed value does occur
    for name, values in ATTRIBUTES.items():
        assert {getattr(s, name) for s in scenes} == set(values)
    with pytest.raises(ConfigError, match="background"):
        Scene("circle", "blue", "blue", "small", "left")


def test_position_moves_the_object_centroid():
    g = _gen(2)
    centroids = {}
    for pos in ("left", "right", "top", "bottom", "centre"):
        scene = Scene("square", "red", "black", "small", pos)
        mask = _object_mask(render([scene], g)[0], scene).float()
        ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        centroids[pos] = ((mask * xs).sum() / mask.sum(), (mask * ys).sum() / mask.sum())
    assert centroids["left"][0] < centroids["centre"][0] - 8 < centroids["right"][0] - 16
    assert centroids["top"][1] < centroids["centre"][1] - 8 < centroids["bottom"][1] - 16
    assert abs(centroids["left"][1] - 32) < 4 and abs(centroids["top"][0] - 32) < 4


@pytest.mark.parametrize("shape", SHAPES)
def test_large_objects_cover_more_pixels(shape):
    g = _gen(4)
    areas = {}
    for size in ("small", "large"):
        scene = Scene(shape, "yellow", "grey", size, "centre")
        areas[size] = _object_mask(render([scene], g)[0], scene).sum().item()
    assert areas["large"] > 2 * areas["small"] > 0


def test_shapes_differ_and_edges_are_anti_aliased():
    n = len(SHAPES)
    cov = shape_coverage(
        torch.arange(n),
        torch.full((n,), 0.5),
        torch.full((n,), 0.5),
        torch.full((n,), 0.25),
        torch.full((n,), 0.1),
    )
    flat = cov.flatten(1)
    for i in range(n):
        for j in range(i + 1, n):
            assert (flat[i] - flat[j]).abs().sum() > 20  # different silhouettes
    partial = ((cov > 0.05) & (cov < 0.95)).sum(dim=(1, 2))
    assert (partial > 10).all()  # fractional coverage along the edges


def test_captions_name_what_they_should_and_parse_back():
    scene = Scene("star", "purple", "white", "large", "left")
    full = caption_text(scene.as_dict())
    assert full == "a large purple star on the left, on a white background"
    assert caption_text({"colour": "blue"}) == "something blue"
    assert caption_text({"shape": "circle", "colour": "red"}) == "a red circle"
    captions = all_captions(scene)
    assert full in captions and "something purple" in captions and "a star" in captions
    assert "a red circle" not in captions
    for text in captions:
        assert parse_caption(text) == {k: v for k, v in parse_caption(text).items()}
        assert satisfies(scene, parse_caption(text))


def test_satisfies_checks_every_named_attribute():
    scene = Scene("circle", "red", "grey", "small", "top")
    assert satisfies(scene, {"colour": "red"})
    assert satisfies(scene, {"colour": "red", "shape": "circle", "position": "top"})
    assert not satisfies(scene, {"colour": "red", "shape": "square"})
    assert not satisfies(scene, {"background": "black"})


def test_random_captions_are_satisfied_by_their_scene():
    g = _gen(6)
    for scene in sample_scenes(200, g):
        text, constraints = random_caption(scene, g)
        assert constraints and satisfies(scene, constraints)
        assert parse_caption(text) == constraints


def test_parse_rejects_ambiguous_captions():
    with pytest.raises(ConfigError, match="more than one"):
        parse_caption("a red blue circle")


def test_reject_images_cover_every_kind_and_differ_from_clean_ones():
    images, kinds = render_rejects(140, _gen(7))
    assert set(kinds) == set(REJECT_KINDS)
    assert images.shape == (140, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    # Clean images have two colours (plus edges); clutter and noise have many more.
    noisy = images[[i for i, k in enumerate(kinds) if k == "noise"]]
    distinct = [len(torch.unique((x * 20).round().flatten(1), dim=1).T) for x in noisy]
    assert min(distinct) > 50
    with pytest.raises(ConfigError):
        render_rejects(4, _gen(), kinds=("nonsense",))
