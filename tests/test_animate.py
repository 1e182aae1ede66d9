"""Zoom / pan / rotate animations: the transform, frames, resume, schedules over frames."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from extras import needs_video
from vqclip.cli import main
from vqclip.errors import ConfigError
from vqclip.generate.config import GenerateConfig
from vqclip.jobs import JobOptions
from vqclip.jobs.animation import (
    Animation,
    claim_folder,
    frame_config,
    run_animation,
    transform_image,
)
from vqclip.output import read_image_metadata


def config(**changes):
    base = dict(prompts=("a tree ^ a house",), size=(32, 32), iterations=3, cutn=4, seed=3)
    base.update(device="cpu", precision="fp32", clip=("tiny",), vqgan="tiny")
    return GenerateConfig(**{**base, **changes})


def pixels(path):
    return np.asarray(Image.open(path))


def spot(y, x, size=32):
    image = torch.zeros(3, size, size)
    image[:, y - 1 : y + 2, x - 1 : x + 2] = 1.0
    return image


def centre_of_mass(image):
    weight = image[0]
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    return float((weight * ys).sum() / weight.sum()), float((weight * xs).sum() / weight.sum())


def test_no_motion_leaves_the_picture_as_it_is():
    image = torch.rand(3, 24, 40)
    assert torch.allclose(transform_image(image, 1.0, (0.0, 0.0), 0.0), image, atol=1e-4)


def test_shift_moves_right_and_down_by_pixels():
    y, x = centre_of_mass(transform_image(spot(10, 10), 1.0, (4.0, 2.0), 0.0))
    assert (y, x) == pytest.approx((12.0, 14.0), abs=0.1)


def test_angle_turns_clockwise_about_the_centre():
    # A spot above the centre (15.5, 15.5) goes to its right after a quarter turn clockwise.
    y, x = centre_of_mass(transform_image(spot(6, 16), 1.0, (0.0, 0.0), 90.0))
    assert (y, x) == pytest.approx((16.0, 25.0), abs=0.1)


def test_zoom_moves_things_away_from_the_centre():
    y, x = centre_of_mass(transform_image(spot(16, 24), 1.5, (0.0, 0.0), 0.0))
    assert (y, x) == pytest.approx((16.25, 28.25), abs=0.1)  # 1.5x as far from (15.5, 15.5)


@pytest.mark.slow
@needs_video
def test_an_animation_writes_its_frames_and_video(models, tmp_path):
    animation = Animation(frames=3, steps_per_frame=2, zoom=1.1, fps=5)
    result = run_animation(config(), animation, tmp_path / "film", models=models)
    assert result.status == "done" and len(result.frames) == 3
    for frame in result.frames:
        assert Image.open(frame).size == (32, 32)
    assert result.video.read_bytes()[4:8] == b"ftyp"
    assert not (tmp_path / "film" / "work").exists()
    # The story of two parts is spread over the three frames: a tree, a tree, a house.
    shown = [read_image_metadata(f)["config"]["prompts"] for f in result.frames]
    assert shown == [["a tree"], ["a tree"], ["a house"]]
    steps = [read_image_metadata(f)["step"] for f in result.frames]
    assert steps == [3, 2, 2]


def test_later_frames_start_from_the_moved_frame_before(models, tmp_path):
    animation = Animation(frames=2, steps_per_frame=1, shift=(3.0, 0.0), video=False)
    cfg = config(prompts=("a tree",))
    frame = frame_config(cfg, animation, 1, tmp_path / "init.png")
    assert frame.init == "image" and frame.iterations == 1 and frame.seed == cfg.seed + 1
    seen = []
    run_animation(
        cfg,
        animation,
        tmp_path / "film",
        models=models,
        on_step=lambda step, run: seen.append(run.config.init_image),
    )
    assert seen[:3] == [None] * 3 and seen[3].endswith("work/00001/init.png")


@pytest.mark.slow
def test_an_interrupted_animation_resumes_to_the_same_frames(models, tmp_path):
    animation = Animation(frames=3, steps_per_frame=3, angle=10.0, video=False)
    whole = run_animation(config(), animation, tmp_path / "whole", models=models)
    steps = []

    def stop_in_frame_1():  # asked after every step, a frame's last too: 3 in frame 0
        steps.append(1)
        return len(steps) == 5  # after the 2nd step of frame 1

    part = run_animation(
        config(),
        animation,
        tmp_path / "part",
        models=models,
        options=JobOptions(checkpoint_every=1),
        should_stop=stop_in_frame_1,
    )
    assert part.status == "stopped" and len(part.frames) == 1
    assert (tmp_path / "part" / "work" / "00001" / "run" / "state.bin").is_file()
    resumed = []
    again = run_animation(
        config(),
        animation,
        tmp_path / "part",
        models=models,
        on_step=lambda step, run: resumed.append(step.index),
    )
    assert resumed == [3, 1, 2, 3]  # the rest of frame 1, then frame 2
    assert again.status == "done"
    for a, b in zip(whole.frames, again.frames, strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def test_a_folder_holding_another_animation_is_refused(models, tmp_path):
    claim_folder(tmp_path, config(), Animation(frames=3, video=False))
    with pytest.raises(ConfigError, match="differs in frames"):
        claim_folder(tmp_path, config(), Animation(frames=4, video=False))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        claim_folder(tmp_path / "file", config(), Animation(video=False))


@pytest.mark.parametrize(
    ("changes", "animation", "message"),
    [
        ({}, {"frames": 1}, "a story of 2 parts needs at least 2 frames"),
        ({"prompt_starts": (0, 5)}, {"frames": 5}, "starts at frame 5, but there are only 5"),
        ({"prompts": ("a", "b")}, {}, "one picture per frame"),
        ({}, {"zoom": 0}, "zoom=0.0: must be greater than 0"),
        ({}, {"shift": [1]}, "shift=\\[1\\]: expected a list of 2 numbers"),
        ({}, {"frames": "ten"}, "frames='ten': expected an integer"),
    ],
)
def test_bad_animations_are_refused_with_the_reason(changes, animation, message):
    with pytest.raises(ConfigError, match=message):
        claim_folder_of(config(**changes), {"video": False, **animation})


def claim_folder_of(cfg, animation):
    from vqclip.jobs.animation import check_animation

    check_animation(cfg, Animation.from_dict(animation))


def test_video_is_one_option_for_jobs_and_animations_whose_default_is_the_door_s(capsys):
    from vqclip.declare import declaration

    assert dict(declaration("video", Animation)) == dict(declaration("video", JobOptions))
    assert Animation().video is True and JobOptions().video is False
    with pytest.raises(SystemExit):
        main(["animate", "--help"])
    text = capsys.readouterr().out
    assert text.count("--video, --no-video") == 1 and "(default: on)" in text
    assert text.count("job files:") == 1  # with --checkpoint-every, under one heading


def test_an_animation_video_without_imageio_ffmpeg_is_refused_naming_both_ways_out(monkeypatch):
    from vqclip.jobs.animation import check_animation

    monkeypatch.setitem(__import__("sys").modules, "imageio_ffmpeg", None)
    with pytest.raises(ConfigError, match=r"vqclip\[video\].*--no-video") as refused:
        check_animation(config(), Animation())
    assert refused.value.field == "video"
    check_animation(config(), Animation(video=False))


def test_unknown_animation_settings_are_named():
    with pytest.raises(ConfigError, match="unknown animation settings \\['zooom'\\]"):
        Animation.from_dict({"zooom": 1.1})


@pytest.mark.slow
def test_the_animate_command_makes_and_resumes_a_toy_film(tmp_path, capsys):
    argv = ["animate", "a red circle ^ a blue square", "--model", "toy", "-i", "2"]
    argv += ["-cuts", "4", "--frames", "2", "--steps-per-frame", "1", "--zoom", "1.05"]
    argv += ["-o", "film", "--no-progress", "--no-video"]
    assert main(argv) == 0
    frames = sorted((tmp_path / "film" / "frames").glob("*.png"))
    assert [f.name for f in frames] == ["00000.png", "00001.png"]
    seed = json.loads((tmp_path / "film" / "animation.json").read_text())["config"]["seed"]
    assert main(argv) == 0  # done already: the stored seed is reused, nothing is made again
    assert f"seed {seed}" in capsys.readouterr().err
    assert main([*argv[:-1], "--frames", "3", "--no-video"]) == 2
    assert "differs in frames" in capsys.readouterr().err
