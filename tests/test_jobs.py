"""A job carried out into its files: results, resume after a stop, video, NaN, threads."""

import json

import numpy as np
import pytest
from PIL import Image

from extras import needs_video
from vqclip.errors import ConfigError
from vqclip.generate.config import GenerateConfig
from vqclip.generate.run import GenerationError, Run
from vqclip.jobs import JobFiles, JobOptions, ModelCache, execute_job, image_names
from vqclip.jobs.files import RUN_FILES
from vqclip.jobs.threads import default_threads, physical_cores
from vqclip.output import read_image_metadata


def config(**changes):
    base = dict(prompts=("a tree",), size=(32, 32), iterations=4, cutn=4, seed=3)
    base.update(device="cpu", precision="fp32", clip=("tiny",), vqgan="tiny", threads=1)
    return GenerateConfig(**{**base, **changes})


def pixels(path):
    return np.asarray(Image.open(path))


@needs_video
def test_a_job_writes_its_image_settings_and_video(models, tmp_path):
    options = JobOptions(video=True, frame_every=1)
    result = execute_job(config(), tmp_path / "job", models=models, options=options)
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


def test_a_run_folder_holds_only_the_files_vqclip_counts_as_its_own(models, tmp_path):
    """`generate --checkpoint-dir` refuses a folder holding any other file, so a file the run
    checkpoint writes that RUN_FILES does not name would make its own folder refused."""
    files = JobFiles.around(tmp_path / "out.png", tmp_path / "run")
    options = JobOptions(frame_every=1, checkpoint_every=1)
    stopped = execute_job(config(), files, models=models, options=options, should_stop=lambda: True)
    assert stopped.status == "stopped" and files.has_checkpoint()
    assert {p.name for p in (tmp_path / "run").iterdir()} <= RUN_FILES


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


def test_an_image_that_stops_early_is_partial_and_says_its_step(
    tiny_vqgan, tiny_clip, tmp_path, monkeypatch
):
    """One image of a batch turns NaN: the job is `partial` (the word every door uses), the
    error names the image, and that image's metadata holds the step it stopped at."""
    original = tiny_clip.encode_image

    def nan_for_image_0(x):
        out = original(x)
        return out.index_fill(0, torch_arange(out.shape[0] // 2), float("nan"))

    monkeypatch.setattr(tiny_clip, "encode_image", nan_for_image_0)
    cache = ModelCache(loader=lambda c: (tiny_vqgan, [tiny_clip]))
    result = execute_job(config(prompts=("a", "b"), iterations=3), tmp_path, models=cache)
    assert result.status == "partial" and "image 0 at step 1" in result.error
    assert result.stopped_images == {0: 1}
    assert read_image_metadata(result.images[0])["stopped_at_step"] == 1
    assert "stopped_at_step" not in read_image_metadata(result.images[1])


def torch_arange(n):
    import torch

    return torch.arange(n)


def test_files_around_an_output_remove_the_checkpoint_once_written(models, tmp_path):
    out = tmp_path / "pic.png"
    options = JobOptions(checkpoint_every=1, save_every=2)
    result = execute_job(config(), JobFiles.around(out), models=models, options=options)
    assert result.status == "done" and result.images == [out]
    assert not (tmp_path / "pic.run").exists()
    assert sorted(p.name for p in (tmp_path / "pic_steps").iterdir()) == ["00002.png", "00004.png"]


def test_the_thread_count_is_resolved_recorded_and_kept_on_resume(models, tmp_path):
    result = execute_job(config(threads=None), tmp_path / "a", models=models, workers=1)
    assert result.config.threads == default_threads(1) == physical_cores()
    assert read_image_metadata(result.images[0])["config"]["threads"] == physical_cores()
    stopped = execute_job(
        config(threads=1), tmp_path / "b", models=models, should_stop=lambda: True
    )
    assert stopped.status == "stopped"
    # A resume that leaves the count to the machine takes the checkpoint's, not the default.
    again = execute_job(config(threads=None), tmp_path / "b", models=models, workers=64)
    assert again.status == "done" and again.config.threads == 1


def test_job_options_are_checked_where_declared():
    with pytest.raises(ConfigError, match="checkpoint_every=-1: must be at least 0"):
        JobOptions(checkpoint_every=-1)
    with pytest.raises(ConfigError, match="unknown job options"):
        JobOptions.from_dict({"chekpoint_every": 3})
    assert JobOptions(frame_every=7).frames_every(500) == 7
    assert JobOptions().frames_every(500) == 0


def test_model_cache_loads_each_pair_once():
    loads = []
    cache = ModelCache(loader=lambda c: loads.append(c.vqgan) or (c.vqgan, []))
    a = cache.get(config(vqgan="v1"))
    assert cache.get(config(vqgan="v1", seed=9)) is a
    cache.get(config(vqgan="v2"))
    assert loads == ["v1", "v2"]


def test_one_device_allocator_for_every_door():
    import torch

    from vqclip.jobs.workers import worker_devices

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("checks the CPU-only answer")
    assert worker_devices() == ["cpu"] and worker_devices(3) == ["cpu"] * 3
    assert worker_devices(names=["cpu", "cpu"]) == ["cpu", "cpu"]
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        worker_devices(names=["cpu", "cuda:1"])


def test_a_thread_count_beyond_the_machine_is_refused():
    from vqclip.jobs.threads import thread_limit, with_threads

    config = GenerateConfig(prompts=("x",), threads=thread_limit())
    assert with_threads(config).threads == thread_limit()
    with pytest.raises(ConfigError, match="at most"):
        with_threads(config.replace(threads=thread_limit() + 1))
