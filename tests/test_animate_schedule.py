"""Story mode: prompts whose "^" parts take turns over a run's steps (or an animation's frames)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vqclip.cli import build_parser
from vqclip.cli.options import given_options
from vqclip.errors import ConfigError
from vqclip.generate.config import GenerateConfig, build_config
from vqclip.generate.run import Run
from vqclip.generate.story import active_part, check_length, story_parts


def config(**changes):
    base = dict(prompts=("a tree ^ a house",), size=(32, 32), iterations=4, cutn=4, seed=3)
    base.update(device="cpu", precision="fp32", clip=("tiny",), vqgan="tiny")
    return GenerateConfig(**{**base, **changes})


@given(st.integers(1, 6), st.integers(1, 50), st.integers(0, 300))
def test_every_n_steps_moves_to_the_next_part_and_wraps(parts, every, index):
    part = active_part(index, parts, 10**6, every=every)
    assert part == (index // every) % parts
    if index % every == 0 and index > 0 and parts > 1:  # a change happens exactly here
        assert part == (active_part(index - 1, parts, 10**6, every=every) + 1) % parts


@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 300))
def test_explicit_starts_show_each_part_from_its_start(gaps, index):
    starts = [0]
    for gap in gaps:
        starts.append(starts[-1] + gap)
    part = active_part(index, len(starts), 10**6, starts=starts)
    assert starts[part] <= index
    assert part == len(starts) - 1 or index < starts[part + 1]


@given(st.integers(1, 8), st.integers(1, 200))
def test_equal_shares_show_every_part_in_order(parts, extra):
    total = parts + extra - 1
    seen = [active_part(i, parts, total) for i in range(total)]
    assert seen == sorted(seen) and set(seen) == set(range(parts))
    shares = [seen.count(p) for p in range(parts)]
    assert max(shares) - min(shares) <= 1


@given(st.lists(st.text(st.characters(blacklist_characters="^"), min_size=1), min_size=1))
def test_story_parts_split_on_carets(pieces):
    pieces = [p for p in pieces if p.strip()]
    if pieces:
        assert story_parts(" ^ ".join(pieces)) == [p.strip() for p in pieces]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompts": ("a tree ^ ",)}, "part 2 of 2 of the story"),
        ({"prompts": ("a tree",), "change_prompt_every": 5}, "no prompt is a story"),
        ({"prompt_starts": (0, 2), "change_prompt_every": 2}, "one of the two"),
        ({"prompt_starts": (1, 3)}, "first part starts at 0"),
        ({"prompt_starts": (0, 3, 3)}, "after the one before"),
        ({"prompt_starts": (0, 1, 2)}, "has 2 parts; give one start per part"),
        ({"prompts": ("a ^ b||c",)}, "remove the extra '\\|'"),
        ({"change_prompt_every": -1}, "at least 0"),
    ],
)
def test_bad_schedules_are_refused_when_the_config_is_made(changes, message):
    with pytest.raises(ConfigError, match=message):
        config(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt_starts": (0, 4)}, "starts at step 4, but there are only 4 steps"),
        ({"change_prompt_every": 4}, "needs more than 4 steps"),
        ({"prompts": ("a ^ b ^ c ^ d ^ e",)}, "needs at least 5 steps"),
    ],
)
def test_a_part_the_run_never_reaches_is_refused_before_models_load(changes, message):
    # No models are given, so reaching the model loader would fail on the unknown "tiny".
    with pytest.raises(ConfigError, match=message):
        Run(config(**changes))
    assert check_length(100, 0, (), [5], "frame") is None


@pytest.mark.slow
def test_the_story_changes_the_prompt_at_its_steps(tiny_vqgan, tiny_clip):
    run = Run(config(change_prompt_every=2), vqgan=tiny_vqgan, clips=[tiny_clip])
    labels = [sorted(step.losses) for step in run.iterate()]
    assert labels == [["a tree"], ["a tree"], ["a house"], ["a house"]]


@pytest.mark.slow
def test_each_image_of_a_batch_follows_its_own_story(tiny_vqgan, tiny_clip):
    run = Run(
        config(prompts=("a ^ b ^ c", "x ^ y"), prompt_starts=()),
        vqgan=tiny_vqgan,
        clips=[tiny_clip],
    )
    shown = []
    for _ in range(4):
        shown.append(run.story_parts_shown())
        run.step()
    assert [s[0] for s in shown] == [0, 0, 1, 2] and [s[1] for s in shown] == [0, 0, 1, 1]


@pytest.mark.slow
def test_a_resumed_story_equals_the_unbroken_one(tiny_vqgan, tiny_clip, tmp_path):
    cfg = config(prompt_starts=(0, 3))
    whole = Run(cfg, vqgan=tiny_vqgan, clips=[tiny_clip]).run()
    first = Run(cfg, vqgan=tiny_vqgan, clips=[tiny_clip])
    for _ in range(3):  # stop right at the change of prompt
        first.step()
    first.save_checkpoint(tmp_path / "run")
    from vqclip.generate.checkpoint import load_run_state

    second = Run(cfg, vqgan=tiny_vqgan, clips=[tiny_clip])
    second.load_state_dict(load_run_state(tmp_path / "run"))
    assert second.story_parts_shown() == {None: 1}
    assert torch.equal(second.run(), whole)


def test_story_flags_reach_the_config():
    argv = ["generate", "a ^ b ^ c", "-cpe", "7", "--model", "toy"]
    args = build_parser().parse_args(argv)
    given = given_options(args) | {"prompts": args.prompt, "model": "toy"}
    assert build_config(given).change_prompt_every == 7
    args = build_parser().parse_args(["generate", "a ^ b", "--prompt-starts", "0", "40"])
    assert given_options(args)["prompt_starts"] == [0, 40]
