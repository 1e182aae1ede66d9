"""The toy benchmark: prompts, settings, the guides' and the judge's verdicts, `vqclip eval`."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from vqclip.cli import main
from vqclip.errors import ConfigError
from vqclip.toy.eval import (
    DEFAULT_PROMPTS,
    EvalSettings,
    PromptResult,
    format_table,
    grid_png,
    guide_says_yes,
    named_attributes,
    split_by_kind,
    summarise,
)
from vqclip.toy.judge import Verdict
from vqclip.toy.models import WEIGHTS_DIR, load_toy_models, toy_paths
from vqclip.toy.world import Scene, caption_text, render

needs_weights = pytest.mark.skipif(
    not (WEIGHTS_DIR / "toy_judge.safetensors").is_file(), reason="toy weights not trained yet"
)


def test_default_prompts_are_fixed_world_captions():
    assert len(DEFAULT_PROMPTS) == len(set(DEFAULT_PROMPTS)) == 60
    named = [named_attributes(p) for p in DEFAULT_PROMPTS]
    assert [len(n) for n in named] == [3] * 40 + [5] * 20
    assert all(n["colour"] != n["background"] for n in named)
    assert split_by_kind(DEFAULT_PROMPTS) == {
        "shape+colour+background": list(range(40)),
        "all five": list(range(40, 60)),
    }
    with pytest.raises(ConfigError, match="names no attribute"):
        named_attributes("a lighthouse at dusk")


def test_settings_are_checked_before_any_model_loads():
    with pytest.raises(ConfigError, match="iterations"):
        EvalSettings(iterations=0)
    with pytest.raises(ConfigError, match="precision"):
        EvalSettings(precision="fp16")
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        EvalSettings().config(["a red circle"], "nope", vqgan="toy", clips=["toy"])
    config = EvalSettings(cutn=3).config(["a red circle"] * 2, "whole", vqgan="v", clips=["c"])
    assert (config.batch_size, config.size, config.cutn, config.cut_method) == (
        2,
        (64, 64),
        3,
        "whole",
    )


def test_variants_override_the_toy_pairs_defaults():
    from vqclip.cli.eval import parse_variant

    label, overrides = parse_variant('lever:prior="toy_prior";prior_weight=2;scales=[0.5,1]')
    assert label == "lever"
    assert overrides == {"prior": "toy_prior", "prior_weight": 2, "scales": [0.5, 1]}
    assert parse_variant("plain:prior=null") == ("plain", {"prior": None})
    assert parse_variant("same:") == ("same", {})
    config = EvalSettings().config(
        ["a red circle"], "overview", vqgan="v", clips=["c"], overrides=overrides
    )
    assert (config.prior, config.prior_weight, config.scales) == ("toy_prior", 2.0, (0.5, 1.0))
    # today's loop: the toy pair's clean-up by its masked prior off with the prior alone
    plain = EvalSettings().config(
        ["a"], "overview", vqgan="v", clips=["c"], overrides={"prior": None}
    )
    default = EvalSettings().config(["a"], "overview", vqgan="v", clips=["c"])
    assert default.prior == "toy_shape_prior" and default.prior_resample_every == 50
    assert default.iterations == 200 and default.prior_final_passes == 1
    assert plain.prior is None and plain.prior_resample_every == 0 and plain.prior_candidates == 1
    assert plain.prior_final_passes == 0 and plain.iterations == default.iterations
    for bad in ("nolabel", ":x=1", "l:novalue"):
        with pytest.raises(ConfigError, match="--variant"):
            parse_variant(bad)
    with pytest.raises(ConfigError, match="unknown settings"):
        EvalSettings().config(["a"], "overview", vqgan="v", clips=["c"], overrides={"nope": 1})


def _result(prompt: str, clean: bool, reads: dict[str, str], guide_yes: bool) -> PromptResult:
    attributes = {"shape": "circle", "colour": "red", "background": "black"} | reads
    attributes |= {"size": "small", "position": "left"}
    return PromptResult(prompt, Verdict(clean, attributes, 0.0 if clean else 1.0), guide_yes)


def test_summary_counts_success_read_guide_yes_and_the_gap():
    prompt = "a red circle on a black background"
    results = [
        _result(prompt, True, {}, True),  # right
        _result(prompt, True, {"shape": "star"}, True),  # wrong shape: fools the guides
        _result(prompt, False, {}, False),  # reads right but refused as unclean
        _result(prompt, True, {"colour": "blue", "shape": "star"}, False),
    ]
    assert [r.success for r in results] == [True, False, False, False]
    assert results[2].read == {"shape": True, "colour": True, "background": True}
    summary = summarise(results)
    assert summary["overall"] == 0.25 and summary["clean"] == 0.75
    assert summary["shape"] == 0.25 and summary["colour"] == 0.5 and summary["background"] == 0.75
    assert summary["read"] == 9 / 12  # the unclean image's three attributes count here
    assert summary["guide_yes"] == 0.5 and summary["gap"] == 0.25
    assert "size" not in summary  # no prompt names it
    table = format_table({"overview": {**summary, "s/prompt": 1.5}})
    assert "25%" in table and "1.50" in table and table.count("\n") == 1


def test_grid_lays_images_out_ten_to_a_row():
    images = torch.zeros(12, 3, 8, 8)
    images[11, 1] = 1.0  # the twelfth image green: second row, second column
    grid = Image.open(io.BytesIO(grid_png(images)))
    assert grid.size == (80, 16)
    assert grid.getpixel((12, 12)) == (0, 255, 0) and grid.getpixel((4, 12)) == (0, 0, 0)


@needs_weights
def test_guides_say_yes_to_clean_images_of_the_prompt_only():
    scenes = [
        Scene("circle", "red", "blue", "large", "centre"),
        Scene("square", "yellow", "black", "large", "left"),
        Scene("star", "white", "grey", "large", "top"),
        Scene("triangle", "green", "white", "small", "bottom"),
    ]
    images = render(scenes, torch.Generator().manual_seed(0))
    own = [
        caption_text({k: getattr(s, k) for k in ("shape", "colour", "background")}) for s in scenes
    ]
    clips = load_toy_models().clips
    assert sum(guide_says_yes(clips, images, own)) >= 3
    assert not any(guide_says_yes(clips, images, own[1:] + own[:1]))  # every caption wrong


def test_bad_options_are_clear_errors_before_any_model_loads(tmp_path, capsys):
    bad = {
        ("--every", "0"): "--every must be at least 1",
        ("--limit", "0"): "--limit must be at least 1",
        ("-i", "0"): "iterations=0: must be at least 1",
        ("-lr", "-1"): "lr=-1.0: must be greater than 0",
        ("--seed", "-3"): "seed=-3: must be at least 0",
        ("--threads", "0"): "threads=0: must be at least 1",
        ("--precision", "fp16"): "--precision fp16: choose from auto, fp32, bf16",
        ("--methods", "overview,nope"): "choose from crowson",
        ("--guides", ","): "--guides needs a CLIP file",
        ("--prompts", str(tmp_path / "none.txt")): "cannot read it",
        ("--json", str(tmp_path)): "is a folder",
        ("--variant", "x:prior_weight=-1"): "prior_weight=-1",
    }
    for argv, message in bad.items():
        assert main(["eval", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na lighthouse\n")
    assert main(["eval", "--prompts", str(prompts)]) == 2
    assert "'a lighthouse' names no attribute" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # not a precision at all: argparse's own message
        main(["eval", "--precision", "fp8"])


def test_every_option_has_help():
    from vqclip.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["eval"]
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in options} >= {"prompts", "methods", "iterations", "json", "guides"}
    assert all(a.help for a in options), [a.dest for a in options if not a.help]
    # the loop's flags are generate's, with the eval's own defaults in their help
    flags = {a.dest: a for a in options}
    assert flags["iterations"].option_strings == ["-i", "--iterations"]
    assert "(default: 200)" in flags["iterations"].help and "(default: 1)" in flags["threads"].help


@needs_weights
def test_eval_command_writes_its_report_and_grids(tmp_path, capsys):
    """--every keeps every Nth default prompt; --guides swaps the guides (the report names
    them) and keeps the toy VQGAN and judge; --json and --images are written whole."""
    guide = toy_paths()["clip_1"]
    out, grids = tmp_path / "eval.json", tmp_path / "grids"
    argv = ["eval", "--every", "25", "-i", "1", "--cutn", "2", "--methods", "overview"]
    argv += ["--precision", "fp32", "--guides", str(guide)]
    out.write_text("an older report")
    assert main([*argv, "--json", str(out), "--images", str(grids)]) == 0
    assert "overview [shape+colour+background]" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["prompts"] == list(DEFAULT_PROMPTS[::25])
    assert report["guides"] == [str(guide)]
    assert report["settings"]["precision"] == "fp32" and report["settings"]["iterations"] == 1
    rows = report["methods"]["overview"]["per_prompt"]
    assert [row["prompt"] for row in rows] == list(DEFAULT_PROMPTS[::25])
    for row in rows:  # read ignores the reject head
        assert set(row["read"]) == set(row["correct"])
        assert all(row["read"][k] for k, ok in row["correct"].items() if ok)
    n_named = sum(len(row["read"]) for row in rows)
    n_read = sum(sum(row["read"].values()) for row in rows)
    assert report["methods"]["overview"]["summary"]["read"] == n_read / n_named
    assert Image.open(grids / "overview.png").size == (640, 64)  # 3 images, one row of ten
    written = [p.name for p in (*tmp_path.iterdir(), *grids.iterdir()) if p.is_file()]
    assert sorted(written) == ["eval.json", "overview.png"]  # no temporary files left
