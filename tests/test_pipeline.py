"""`VQGANCLIP`: the diffusers-shaped facade over `Run`, on the toy pair."""

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
