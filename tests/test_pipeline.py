"""`VQGANCLIP`: the diffusers-shaped facade over `Run`, on the toy pair."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vqclip.errors import VQClipError
from vqclip.pipeline import VQGANCLIP


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return VQGANCLIP.from_pretrained("toy", device="cpu", precision="fp32")


def pixels(image):
    return np.asarray(image)


def test_a_call_is_the_run_of_the_same_settings(pipe):
    from vqclip.generate.config import build_config
    from vqclip.generate.run import Run
    from vqclip.output import to_uint8
    from vqclip.prior.plugin import extensions_for

    images = pipe("a red circle", steps=2, size=32, seed=3, cutn=2)
    assert len(images) == 1 and images[0].size == (32, 32)
    assert pipe.last_config.cut_method == "overview"  # the toy pair's own setting is kept
    config = build_config(
        {"model": "toy", "prompt": "a red circle", "iterations": 2, "size": [32, 32], "seed": 3}
        | {"cutn": 2, "device": "cpu", "precision": "fp32", "threads": 1}
    )
    assert pipe.last_config == config  # the thread count the image was made with, recorded
    run = Run(config, vqgan=pipe.vqgan, clips=pipe.clips, extensions=extensions_for(config))
    assert np.array_equal(pixels(images[0]), to_uint8(run.run()[0]))


def test_prior_none_gives_the_plain_loop_as_the_command_line_does(pipe):
    images = pipe("a red circle", steps=2, size=32, seed=3, cutn=2, prior="none")
    assert len(images) == 1 and pipe.last_config.prior is None
    assert pipe.last_config.prior_resample_every == 0 and pipe.last_config.prior_candidates == 1


def test_generator_and_seed(pipe):
    def draw(seed):
        return pipe(
            "a blue square", steps=1, size=32, cutn=2, generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = draw(5)[0], draw(5)[0], draw(6)[0]
    assert np.array_equal(pixels(a), pixels(b)) and not np.array_equal(pixels(a), pixels(c))
    generator = torch.Generator().manual_seed(5)
    pipe("a blue square", steps=1, size=32, cutn=2, generator=generator)
    first = pipe.last_config.seed
    pipe("a blue square", steps=1, size=32, cutn=2, generator=generator)
    assert pipe.last_config.seed != first  # a generator moves on, as in diffusers
    again = pipe("a blue square", steps=1, size=32, cutn=2, seed=first)[0]
    assert np.array_equal(pixels(again), pixels(a))
    with pytest.raises(VQClipError, match="seed or generator"):
        pipe("x", seed=1, generator=generator)


def test_callback_sees_every_step_and_a_list_makes_one_image_each(pipe):
    seen = []
    images = pipe(
        ["a red circle", "a green triangle"],
        steps=3,
        size=32,
        cutn=2,
        callback=lambda step, run: seen.append((step.index, run.config.batch_size)),
    )
    assert seen == [(1, 2), (2, 2), (3, 2)]
    assert len(images) == 2 and not np.array_equal(pixels(images[0]), pixels(images[1]))


def test_the_step_iterator_stays_the_core(pipe):
    run = pipe.run("a red circle", steps=2, size=32, cutn=2, seed=1)
    assert [step.index for step in run.iterate()] == [1, 2]


def test_from_files_and_bad_names(model_files):
    vqgan, clip = model_files[1], model_files[3]
    pipe = VQGANCLIP.from_pretrained(vqgan, clip=clip, device="cpu")
    assert pipe.settings["vqgan"] == vqgan and pipe.settings["clip"] == [clip]
    assert pipe("x", steps=1, size=32, cutn=2)[0].size == (32, 32)
    with pytest.raises(VQClipError, match="model pair"):
        VQGANCLIP.from_pretrained("toy", clip=clip)
    with pytest.raises(VQClipError):
        VQGANCLIP.from_pretrained(vqgan, clip=clip, iterations=0)


def readme_python_blocks() -> list[str]:
    """The ```python blocks of the README's Python API section."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_readmes_pipeline_example_runs_as_written(monkeypatch, capsys):
    """The README's example, its code as written: only the pair it loads is the toy one (no
    download), and each call's steps, size and cutouts are scaled down after the call has
    passed them on as the README gives them."""
    import vqclip
    from vqclip.generate.run import Run

    real_from_pretrained, real_run = VQGANCLIP.from_pretrained.__func__, VQGANCLIP.run
    asked, calls = [], []

    def from_pretrained(cls, name="default", **settings):
        asked.append(name)
        return real_from_pretrained(cls, "toy", device="cpu", precision="fp32", **settings)

    def run(self, prompt, **options):
        calls.append(dict(options))
        return real_run(self, prompt, **{**options, "steps": 2, "size": 32, "cutn": 2})

    monkeypatch.setattr(VQGANCLIP, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(VQGANCLIP, "run", run)
    torch.set_num_threads(1)
    example = readme_python_blocks()[0]
    assert "from vqclip import VQGANCLIP" in example and "pipe.steps" in example
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)

    assert vqclip.VQGANCLIP is VQGANCLIP and asked == ["default"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "200"  # pipe.steps: the toy pair's own
    assert [line.split()[0] for line in printed[1:3]] == ["1", "2"]  # the callback's steps
    assert printed[3] == str(scope["pipe"].last_config.seed)
    assert [len(scope["images"]), scope["images"][0].size] == [2, (32, 32)]
    assert isinstance(scope["run"], Run)
    assert calls[0]["steps"] == 200 and calls[0]["size"] == 256 and calls[0]["seed"] == 7
    assert calls[1]["cutn"] == 64 and calls[1]["generator"] is not None
    assert calls[2]["steps"] == 50


def test_the_readmes_run_example_imports_what_it_names():
    for line in readme_python_blocks()[1].splitlines():
        if line.startswith(("from vqclip", "import vqclip")):
            exec(line, {})


def test_pipe_steps_is_what_a_call_without_steps_runs(pipe):
    assert pipe.steps == 200  # the toy pair's own
    three = VQGANCLIP.from_pretrained("toy", device="cpu", precision="fp32", iterations=3)
    three("a red circle", size=32, cutn=2, seed=1)
    assert three.steps == three.last_config.iterations == 3
