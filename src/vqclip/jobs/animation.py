"""Zoom, pan and rotate animations: each frame warm-starts from the one before, transformed.

Frame 0 is an ordinary run of `config.iterations` steps. Frame f > 0 takes frame f-1 as written
on disk, zooms, rotates and shifts it, and runs `steps_per_frame` steps from its VQGAN encoding
(the transformed image is the init image). A story prompt ("a forest ^ a castle") takes turns
over frames: `change_prompt_every` and `prompt_starts` count frames here.

Every frame is a job (`vqclip.jobs.execute_job`) in `work/<frame>/`, checkpointed as it runs;
a finished frame is written to `frames/<frame>.png` and its work folder removed. A frame is
made from the PNG of the frame before, never from memory, so an animation interrupted anywhere
resumes to the same frames as one that never stopped.

The folder's layout (animation.json, frames/, work/, video.mp4) is in `vqclip.jobs.files`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vqclip import declare
from vqclip.atomic import atomic_write_bytes, atomic_write_text
from vqclip.declare import option, validate_fields
from vqclip.errors import CheckpointError, ConfigError
from vqclip.generate.config import SEED_LIMIT, GenerateConfig
from vqclip.generate.prompts import parse_story
from vqclip.generate.story import active_part, check_length
from vqclip.jobs.files import (
    ANIMATION_SETTINGS_FILE,
    FRAME_INIT_FILE,
    FRAMES_DIR,
    RUN_DIR,
    VIDEO_FILE,
    WORK_DIR,
)
from vqclip.jobs.options import video_option
from vqclip.output import video_missing


@dataclass(frozen=True)
class Animation:
    """How the frames move. The transform of one frame to the next is about the image centre:
    scale by `zoom`, rotate by `angle`, then shift by `shift`."""

    frames: int = option(
        60, "--frames", help="frames to make", group="animation", low=1, high=10**6
    )
    steps_per_frame: int = option(
        20,
        "--steps-per-frame",
        help="optimiser steps of each frame after the first (the first runs --iterations)",
        group="animation",
        low=1,
        high=10**6,
    )
    zoom: float = option(
        1.0,
        "--zoom",
        help="scale per frame: 1.02 moves 2% closer each frame, below 1 moves away",
        group="animation",
        above=0,
        high=10,
    )
    shift: tuple[float, float] = option(
        (0.0, 0.0),
        "--shift",
        help="pixels the picture moves per frame, right and down",
        group="animation",
        low=-1e4,
        high=1e4,
        metavar=("X", "Y"),
    )
    angle: float = option(
        0.0,
        "--angle",
        help="degrees the picture turns per frame, clockwise",
        group="animation",
        low=-360,
        high=360,
    )
    fps: int = option(
        12, "--fps", help="frames per second of the video", group="animation", low=1, high=240
    )
    video: bool = video_option(True)

    def __post_init__(self) -> None:
        validate_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return declare.to_mapping(self)

    @classmethod
    def from_dict(cls, data: Any) -> Animation:
        return declare.from_mapping(cls, data, "animation settings")

    def total_steps(self, config: GenerateConfig) -> int:
        return config.iterations + (self.frames - 1) * self.steps_per_frame


@dataclass
class AnimationResult:
    status: str  # "done", "failed" (error says why) or "stopped"
    frames: list[Path] = field(default_factory=list)  # the finished frames, in order
    seconds: float = 0.0
    video: Path | None = None
    error: str | None = None


def check_animation(config: GenerateConfig, animation: Animation) -> None:
    """The config can be animated; ConfigError naming what is wrong otherwise."""
    if config.batch_size != 1 or len(config.prompts) > 1:
        raise ConfigError(
            f"batch_size={config.batch_size}: an animation makes one picture per frame; give one "
            "prompt (a story of parts separated by ^ to change it over the frames) and batch 1"
        )
    parts = [parse_story(config.prompts[0]).length] if config.prompts else [1]
    every, starts = config.change_prompt_every, config.prompt_starts
    check_length(animation.frames, every, starts, parts, "frame")
    why = video_missing() if animation.video else None
    if why:
        raise ConfigError(
            f"video: {why}; or set video to false (--no-video) for the frames alone",
            field="video",
        )


def frame_config(config: GenerateConfig, animation: Animation, frame: int, init: Path | None):
    """The run of one frame: the story part shown at this frame, its own seed, and (after the
    first) the transformed frame before as its init image."""
    changes: dict[str, Any] = {"change_prompt_every": 0, "prompt_starts": ()}
    if config.prompts:
        parts = parse_story(config.prompts[0]).part_texts
        every, starts = config.change_prompt_every, config.prompt_starts
        changes["prompts"] = (
            parts[active_part(frame, len(parts), animation.frames, every, starts)],
        )
    changes["seed"] = (config.seed + frame) % SEED_LIMIT
    if frame > 0:
        changes.update(iterations=animation.steps_per_frame, init="image", init_image=str(init))
    return config.replace(**changes)


def transform_image(
    image: torch.Tensor, zoom: float, shift: tuple[float, float], angle: float
) -> torch.Tensor:
    """(3, H, W) -> (3, H, W): the picture scaled by `zoom` and turned by `angle` degrees
    clockwise about its centre, then moved `shift` pixels right and down. Uncovered borders
    mirror the picture."""
    _, height, width = image.shape
    a = math.radians(angle)
    # Content moves by p -> zoom * R(a) p + s, in pixels about the centre (y points down, so
    # R(a) turns clockwise on screen); grid_sample wants the inverse map, in [-1, 1] units.
    cos, sin = math.cos(a) / zoom, math.sin(a) / zoom
    inverse = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64)  # R(-a) / zoom
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    offset = -(inverse @ torch.tensor(shift, dtype=torch.float64))
    theta = torch.cat(
        [inverse * half[None, :] / half[:, None], (offset / half)[:, None]], dim=1
    )  # (2, 3)
    grid = F.affine_grid(theta[None].float(), [1, 3, height, width], align_corners=False)
    out = F.grid_sample(
        image[None].float(), grid, mode="bicubic", padding_mode="reflection", align_corners=False
    )
    return out[0].clamp(0, 1)


def finished_frames(folder: Path, frames: int) -> int:
    """How many frames, from the first on, are written."""
    done = 0
    while done < frames and (folder / FRAMES_DIR / f"{done:05d}.png").is_file():
        done += 1
    return done


def claim_folder(folder: str | Path, config: GenerateConfig, animation: Animation) -> None:
    """Check the animation can be made, then record its settings in `folder`, or check that
    a started one's are the same; ConfigError otherwise."""
    check_animation(config, animation)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{str(folder)!r} is not a folder; give a folder for the animation")
    settings = {"config": config.to_dict(), "animation": animation.to_dict()}
    stored = _read_settings(folder)
    if stored is None:
        atomic_write_text(folder / ANIMATION_SETTINGS_FILE, json.dumps(settings, indent=2))
        return
    differ = sorted(
        name
        for part in ("config", "animation")
        for name in settings[part].keys() | stored.get(part, {}).keys()
        if settings[part].get(name) != stored.get(part, {}).get(name)
    )
    if differ:
        raise ConfigError(
            f"{str(folder)!r} holds another animation (its {ANIMATION_SETTINGS_FILE} differs in "
            f"{', '.join(differ)}); give another folder, or the same settings to resume it"
        )


def stored_animation(folder: str | Path) -> tuple[GenerateConfig, Animation] | None:
    """The settings an animation folder was started with, or None for a new folder."""
    stored = _read_settings(Path(folder))
    if stored is None:
        return None
    return GenerateConfig.from_dict(stored["config"]), Animation.from_dict(stored["animation"])


def _read_settings(folder: Path) -> dict | None:
    path = folder / ANIMATION_SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {str(path)!r}: {e}")
    if not isinstance(stored, dict) or not {"config", "animation"} <= stored.keys():
        raise ConfigError(f"{str(path)!r} is not the settings file of a vqclip animation")
    return stored


def run_animation(
    config: GenerateConfig,
    animation: Animation,
    folder: str | Path,
    *,
    models=None,
    device: str | None = None,
    options=None,
    workers: int = 1,
    on_step: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_file: Callable[[Path], None] | None = None,
    on_discard: Callable[[Path], None] | None = None,
) -> AnimationResult:
    """Make the frames of `animation` into `folder`, resuming after its last finished frame (and
    from the checkpoint of the frame under way). `on_file(path)` follows every file or folder
    written that should outlast the run (frames, checkpoints, the video) and `on_discard(path)`
    every folder removed (a finished frame's work), to mirror them on shared storage.
    `options` (a `JobOptions`): its checkpoint_every applies to each frame's run; `workers`:
    the jobs run side by side, which share the CPU threads."""
    from vqclip.generate.prompts import load_image
    from vqclip.jobs import JobOptions, ModelCache, execute_job
    from vqclip.jobs.threads import with_threads
    from vqclip.output import VideoWriter, save_image

    folder = Path(folder).resolve()
    started = time.perf_counter()
    models = models or ModelCache()
    config = with_threads(config, workers)
    claim_folder(folder, config, animation)
    options = JobOptions(checkpoint_every=(options or JobOptions()).checkpoint_every)
    push = on_file or (lambda path: None)
    discard = on_discard or (lambda path: shutil.rmtree(path, ignore_errors=True))
    push(folder / ANIMATION_SETTINGS_FILE)
    first = finished_frames(folder, animation.frames)
    for frame in range(first, animation.frames):
        work = folder / WORK_DIR / f"{frame:05d}"
        init = work / FRAME_INIT_FILE if frame > 0 else None
        if init is not None and not init.is_file():
            before = load_image(folder / FRAMES_DIR / f"{frame - 1:05d}.png")
            moved = transform_image(before, animation.zoom, animation.shift, animation.angle)
            save_image(moved, init)
            push(init)
        job = dict(models=models, device=device, options=options)
        job.update(on_step=on_step, should_stop=should_stop, on_checkpoint=push)
        this = frame_config(config, animation, frame, init)
        try:
            result = execute_job(this, work, **job)
        except CheckpointError:
            # The frame's checkpoint does not fit (the folder was moved, so the init path
            # changed): make this one frame again rather than fail the animation.
            discard(work / RUN_DIR)
            result = execute_job(this, work, **job)
        if result.status == "stopped":
            return AnimationResult("stopped", _frame_paths(folder, frame), _since(started))
        if result.status == "failed":
            error = f"frame {frame}: {result.error}"
            return AnimationResult(
                "failed", _frame_paths(folder, frame), _since(started), None, error
            )
        target = folder / FRAMES_DIR / f"{frame:05d}.png"
        atomic_write_bytes(target, result.images[0].read_bytes())
        push(target)
        discard(work)
    frames = _frame_paths(folder, animation.frames)
    video = None
    if animation.video:
        writer = VideoWriter(folder / VIDEO_FILE, fps=animation.fps)
        for path in frames:
            writer.add(load_image(path))
        video = writer.close()
        if video is not None:
            push(video)
    discard(folder / WORK_DIR)
    return AnimationResult("done", frames, _since(started), video)


def _frame_paths(folder: Path, count: int) -> list[Path]:
    return [folder / FRAMES_DIR / f"{f:05d}.png" for f in range(count)]


def _since(started: float) -> float:
    return time.perf_counter() - started
