"""A job carried out into a folder: results, resume after a stop, video, failure."""

import json

import numpy as np
from PIL import Image

from vqclip.generate.config import GenerateConfig
from vqclip.generate.run import GenerationError, Run
from vqclip.jobs import ModelCache, execute_job, image_names
from vqclip.output import read_image_metadata


def config(**changes):
    base = dict(prompts=("a tree",), size=(32, 32), iterations=4, cutn=4, seed=3)
    base.update(device="cpu", precision="fp32", clip=("tiny",), vqgan="tiny")
    return GenerateConfig(**{**base, **changes})


def pixels(path):
    return np.asarray(Image.open(path))


def test_a_job_writes_its_image_settings_and_video(models, tmp_path):
    result = execute_job(config(), tmp_path / "job", models=models, video=True, frame_every=1)
    assert result.status == "done" and result.steps == 4
    assert result.images == [tmp_path / "job" / "image.png"]
    meta = read_image_metadata(result.images[0])
    assert meta["config"]["seed"] == 3 and meta["step"] == 4
    settings = json.loads((tmp_path / "job" / "settings.json").read_text())
    assert GenerateConfig.from_dict(settings) == result.config
    assert len(list((tmp_path / "job" / "frames").glob("*.png"))) == 4
    assert result.video.read_bytes()[4:8] == b"ftyp"


def test_a_stopped_job_resumes_to_the_unbroken_image(models, tmp_path):
    whole = execute_job(config(), tmp_path / "whole", models=models)
    stopped = execute_job(config(), tmp_path / "part", models=models, should_stop=lambda: True)
    assert stopped.status == "stopped" and stopped.steps == 1 and not stopped.images
    seen = []
    again = execute_job(
        config(),
        tmp_path / "part",
        models=models,
        on_step=lambda step, run: seen.append(step.index),
    )
    assert seen == [2, 3, 4] and again.status == "done"
    assert np.array_equal(pixels(again.images[0]), pixels(whole.images[0]))


def test_a_batch_job_writes_one_image_each(models, tmp_path):
    result = execute_job(config(prompts=("a", "b"), iterations=1), tmp_path, models=models)
    assert [p.name for p in result.images] == image_names(2) == ["image_0.png", "image_1.png"]


def test_a_job_whose_loss_fails_keeps_its_last_good_image(models, tmp_path, monkeypatch):
    real = Run.step

    def nan_at_3(self):
        if self.step_index == 2:
            raise GenerationError("the loss became [nan] at step 3")
        return real(self)

    monkeypatch.setattr(Run, "step", nan_at_3)
    result = execute_job(config(), tmp_path, models=models)
    assert result.status == "failed" and "nan" in result.error
    assert read_image_metadata(result.images[0])["step"] == 2


def test_model_cache_loads_each_pair_once(monkeypatch):
    loads = []
    monkeypatch.setattr(
        "vqclip.generate.run.load_models", lambda c: loads.append(c.vqgan) or (c.vqgan, [])
    )
    cache = ModelCache()
    a = cache.get(config(vqgan="v1"))
    assert cache.get(config(vqgan="v1", seed=9)) is a
    cache.get(config(vqgan="v2"))
    assert loads == ["v1", "v2"]
