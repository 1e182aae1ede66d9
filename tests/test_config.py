"""The option declarations: one home per option, from which the CLI and JSON jobs are built."""

import dataclasses
import json

import pytest

from vqclip.cli import build_parser
from vqclip.cli.options import given_options
from vqclip.errors import ConfigError
from vqclip.generate.config import GenerateConfig, build_config


def _generate_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["generate"]


def test_every_option_has_flags_help_and_a_group_and_reaches_the_cli():
    actions = {a.dest: a for a in _generate_parser()._actions}
    for f in dataclasses.fields(GenerateConfig):
        assert f.metadata["flags"] and f.metadata["help"].strip(), f.name
        assert f.name in actions, f"{f.name} has no flag"
        assert set(f.metadata["flags"]) <= set(actions[f.name].option_strings)


def test_flags_round_trip_every_option_into_the_config():
    """A config far from the defaults, written as flags and parsed back, is the same config."""
    want = GenerateConfig(
        prompts=("a cat:2", "a dog|fur:-1"),
        image_prompts=("a.png:0.5",),
        noise_prompt_seeds=(3, 4),
        noise_prompt_weights=(0.5, 0.25),
        vqgan="v.safetensors",
        vqgan_config="v.yaml",
        clip=("c1", "c2"),
        clip_weights=(1.0, 0.5),
        size=(48, 32),
        iterations=7,
        seed=11,
        batch_size=2,
        device="cpu",
        precision="fp32",
        checkpoint_decoder=True,
        cutn=5,
        cut_pow=1.5,
        cut_method="overview",
        augments=("Ro",),
        noise_fac=0.2,
        init="pixels",
        init_weight=0.3,
        tv_weight=0.1,
        tv_on="z",
        optimiser="sgd",
        lr=0.7,
        lr_scale="none",
        schedule="step",
        step_size=3,
        gamma=0.9,
    )
    argv = ["generate"]
    for f in dataclasses.fields(GenerateConfig):
        value, flag = getattr(want, f.name), f.metadata["flags"][-1]
        if value == f.default:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif f.metadata["cli"].get("action") == "append":
            for item in value:
                argv += [flag, item]
        elif isinstance(value, tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    given = given_options(build_parser().parse_args(argv))
    assert build_config(given) == want


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("iterations", "10", "expected an integer"),
        ("iterations", True, "expected an integer"),
        ("iterations", 0, "at least 1"),
        ("seed", 1.5, "expected an integer"),
        ("seed", -1, "at least 0"),
        ("lr", float("nan"), "finite"),
        ("lr", 0, "greater than 0"),
        ("lr", 1e300, "at most"),
        ("size", "abc", "list of 2 integers"),
        ("size", [1, 2, 3], "list of 2 integers"),
        ("clip", None, "list of strings"),
        ("augments", ["Zz"], "choose from"),
        ("cut_method", "random", "choose from"),
        ("cuda_graphs", "yes", "true or false"),
        ("prompts", [5], "expected a string"),
    ],
)
def test_bad_values_name_the_option(field, value, message):
    with pytest.raises(ConfigError, match=field) as info:
        GenerateConfig.from_dict({"prompts": ["x"], field: value})
    assert message in str(info.value)


def test_a_json_job_uses_the_same_names_and_the_model_pairs_defaults():
    job = json.loads('{"prompt": "a red circle", "model": "toy", "iterations": 3, "seed": 2}')
    config = build_config(job)
    assert config.prompts == ("a red circle",) and config.iterations == 3
    assert (config.vqgan, config.size, config.cutn) == ("toy_vqgan", (64, 64), 16)


def test_stored_settings_are_the_base_and_given_options_win():
    stored = build_config({"prompt": "x", "model": "toy", "seed": 5}).to_dict()
    again = build_config({"iterations": 9}, stored)
    assert again.replace(iterations=stored["iterations"]).to_dict() == stored
    assert again.iterations == 9


def test_no_seed_draws_one_and_records_it():
    a, b = GenerateConfig(prompts=("x",)), GenerateConfig(prompts=("x",))
    assert isinstance(a.seed, int) and a.to_dict()["seed"] == a.seed
    assert GenerateConfig.from_dict(a.to_dict()) == a
    assert a.seed != b.seed or a.seed != GenerateConfig(prompts=("x",)).seed


def test_bad_prompt_syntax_is_caught_when_the_config_is_made():
    with pytest.raises(ConfigError, match=r"'\|'"):
        GenerateConfig(prompts=("a cat|",))


def test_an_init_image_beside_another_start_is_refused():
    from vqclip.errors import ConfigError

    assert GenerateConfig(prompts=("x",), init_image="a.png").init == "image"
    for init in ("pixels", "gradient", "prior"):
        with pytest.raises(ConfigError, match="init image"):
            GenerateConfig(prompts=("x",), init=init, init_image="a.png", prior="toy_prior")
