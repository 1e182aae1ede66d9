"""The shipped ImageNet class names and CLIP prompt templates, and class_index."""

from __future__ import annotations

import collections

import pytest

from vqclip.errors import ConfigError
from vqclip.prior.imagenet import class_index, imagenet_class_names, imagenet_templates


def test_class_names_count_and_spot_checks() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[0] == "tench"
    assert names[1] == "goldfish"
    assert names[207] == "Golden Retriever"
    assert names[250] == "Siberian Husky"
    assert names[999] == "toilet paper"
    assert all(name and name == name.strip() and "\n" not in name for name in names)


def test_class_names_unique_but_for_the_sources_two_repeats() -> None:
    # OpenAI's notebook (and open_clip) name two pairs of classes alike; nothing else repeats.
    counts = collections.Counter(name.lower() for name in imagenet_class_names())
    repeated = {name: n for name, n in counts.items() if n > 1}
    assert repeated == {"missile": 2, "sunglasses": 2}
    names = imagenet_class_names()
    assert [i for i, n in enumerate(names) if n == "missile"] == [657, 744]
    assert [i for i, n in enumerate(names) if n == "sunglasses"] == [836, 837]


def test_templates() -> None:
    templates = imagenet_templates()
    assert len(templates) == 80
    assert len(set(templates)) == 80
    assert all(t.count("{}") == 1 for t in templates)
    assert templates[0] == "a bad photo of a {}."
    assert templates[0].format("tench") == "a bad photo of a tench."


def test_lists_are_read_once() -> None:
    assert imagenet_class_names() is imagenet_class_names()
    assert imagenet_templates() is imagenet_templates()


def test_class_index_by_number() -> None:
    names = imagenet_class_names()
    assert class_index(0, names) == 0
    assert class_index(999, names) == 999
    assert class_index("207", names) == 207
    assert class_index(" 250 ", names) == 250


def test_class_index_by_name_any_case() -> None:
    names = imagenet_class_names()
    assert class_index("tench", names) == 0
    assert class_index("golden retriever", names) == 207
    assert class_index("  GOLDEN Retriever ", names) == 207
    assert class_index("siberian husky", names) == 250
    assert class_index("Toilet Paper", names) == 999


@pytest.mark.parametrize("value", [1000, -1, "1000", "-1"])
def test_class_index_out_of_range(value: int | str) -> None:
    with pytest.raises(ConfigError, match=r"out of range 0-999") as info:
        class_index(value, imagenet_class_names())
    assert info.value.field == "prior_class"
    assert "give a number 0-999 or a class name" in str(info.value)


def test_class_index_unknown_name_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        class_index("golden retreiver", imagenet_class_names())
    message = str(info.value)
    assert info.value.field == "prior_class"
    assert "'golden retriever'" in message
    assert "did you mean" in message
    assert "give a number 0-999 or a class name" in message


def test_class_index_unknown_name_without_suggestion() -> None:
    with pytest.raises(ConfigError, match="give a number 0-999 or a class name") as info:
        class_index("qqqqqqqqqqqqqqqq", imagenet_class_names())
    assert "did you mean" not in str(info.value)


def test_class_index_ambiguous_name_asks_for_number() -> None:
    with pytest.raises(ConfigError, match=r"657, 744.*give the number") as info:
        class_index("Missile", imagenet_class_names())
    assert info.value.field == "prior_class"


@pytest.mark.parametrize("value", [True, 2.0, None])
def test_class_index_rejects_other_types(value: object) -> None:
    with pytest.raises(ConfigError, match="give a number 0-999"):
        class_index(value, imagenet_class_names())  # type: ignore[arg-type]


def test_class_index_with_other_names() -> None:
    names = ["cat", "dog"]
    assert class_index("DOG", names) == 1
    with pytest.raises(ConfigError, match="out of range 0-1"):
        class_index(2, names)
