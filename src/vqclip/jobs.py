"""One generation job carried out into a folder: the unit the web service and the batch runner
share.

A job is a `GenerateConfig` and a folder. `execute_job` resumes from the folder's run checkpoint
when there is one (so a job killed with the machine goes on where its last checkpoint left it),
writes a checkpoint every `checkpoint_every` steps, small progress frames for the video, and at
the end the image(s) with their settings inside, `settings.json` and, if asked, `video.mp4`.
Every file is written atomically. The loop itself knows nothing of this: the job only consumes
`Run.iterate()`.

Folder layout:

    image.png (image_0.png, image_1.png ... for a batch)   the result, settings in its metadata
    settings.json     the resolved config (seed and size filled in)
    run/              the run checkpoint (`vqclip.generate.checkpoint`), kept for "continue"
    frames/           00010.png ...: the first image every `frame_every` steps
    video.mp4         the frames as a video, when asked for
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vqclip.atomic import atomic_write_text
from vqclip.generate.checkpoint import STATE_FILE, load_run_state
from vqclip.generate.config import GenerateConfig
from vqclip.generate.run import GenerationError, Run, Step

RUN_DIR = "run"
FRAMES_DIR = "frames"
SETTINGS_FILE = "settings.json"
VIDEO_FILE = "video.mp4"


def image_names(batch: int, suffix: str = ".png") -> list[str]:
    """The result files of a job of `batch` images."""
    return [f"image{suffix}"] if batch == 1 else [f"image_{i}{suffix}" for i in range(batch)]


class ModelCache:
    """Models loaded once per worker and shared by the jobs that name them.

    A run casts the decoder and CLIP to its compute dtype and moves them to its device, in
    place, so the key holds the device and precision as well as the names."""

    def __init__(self) -> None:
        self._models: dict[tuple, tuple] = {}

    def get(self, config: GenerateConfig) -> tuple:
        from vqclip.generate.run import load_models

        key = (config.vqgan, config.vqgan_config, config.clip, config.device, config.precision)
        if key not in self._models:
            self._models[key] = load_models(config)
        return self._models[key]


@dataclass
class JobResult:
    status: str  # "done", "failed" (error says why) or "stopped" (should_stop asked)
    config: GenerateConfig  # as run: seed and size resolved
    steps: int
    seconds: float
    images: list[Path] = field(default_factory=list)
    video: Path | None = None
    error: str | None = None


def execute_job(
    config: GenerateConfig,
    folder: str | Path,
    *,
    models: ModelCache | None = None,
    checkpoint_every: int = 20,
    frame_every: int = 0,
    video: bool = False,
    on_step: Callable[[Step, Run], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> JobResult:
    """Carry out `config` into `folder`, resuming from its checkpoint if one is there.

    `on_step(step, run)` sees every step (progress, previews); `should_stop()` is asked after
    every step and, when true, the job writes its checkpoint and returns "stopped" (a later call
    resumes it). A job whose every image's loss became NaN returns "failed" with its last good
    images written. `device` overrides the config's (a worker's own GPU) without changing the
    settings, so any worker can resume the job; `on_checkpoint(run_dir)` follows every
    checkpoint written (to copy it to shared storage)."""
    from vqclip import __version__
    from vqclip.output import save_image

    folder = Path(folder)
    run_dir = folder / RUN_DIR
    started = time.perf_counter()
    vqgan, clips = (models or ModelCache()).get(config)
    run = Run(config, vqgan=vqgan, clips=clips, device=device)
    if (run_dir / STATE_FILE).is_file():
        run.load_state_dict(load_run_state(run_dir))
    config = run.config
    atomic_write_text(folder / SETTINGS_FILE, json.dumps(config.to_dict(), indent=2))
    every = frame_every or (max(1, config.iterations // 100) if video else 0)

    def finish(status: str, images, error: str | None = None) -> JobResult:
        paths = []
        for i, name in enumerate(image_names(config.batch_size)):
            meta = {
                "vqclip_version": __version__,
                "config": config.to_dict(),
                "image_index": i,
                "step": run.step_index,
                "size": list(run.image_size),
            }
            paths.append(save_image(images[i], folder / name, meta))
        film = _write_video(folder) if video and status == "done" else None
        seconds = time.perf_counter() - started
        return JobResult(status, config, run.step_index, seconds, paths, film, error)

    try:
        for step in run.iterate():
            if on_step is not None:
                on_step(step, run)
            if every and step.index % every == 0:
                save_image(step.image[0], folder / FRAMES_DIR / f"{step.index:05d}.png")
            at_end = step.index == config.iterations
            if checkpoint_every and (step.index % checkpoint_every == 0 or at_end):
                run.save_checkpoint(run_dir)
                if on_checkpoint is not None:
                    on_checkpoint(run_dir)
            if should_stop is not None and not at_end and should_stop():
                run.save_checkpoint(run_dir)
                if on_checkpoint is not None:
                    on_checkpoint(run_dir)
                return JobResult("stopped", config, run.step_index, time.perf_counter() - started)
    except GenerationError as e:
        return finish("failed", run.last_good_image(), str(e))
    return finish("done", run.image())


def _write_video(folder: Path, fps: int = 30) -> Path | None:
    """The progress frames of `folder` as an mp4 (the `video` extra); None without frames."""
    from vqclip.output import VideoWriter
    from vqclip.prompts import load_image

    frames = sorted((folder / FRAMES_DIR).glob("*.png"))
    if not frames:
        return None
    writer = VideoWriter(folder / VIDEO_FILE, fps=fps)
    for frame in frames:
        writer.add(load_image(frame))
    return writer.close()
