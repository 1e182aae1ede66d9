"""One generation job carried out into its files: the one consumer of `Run.iterate()` that every
door (`vqclip generate`, the web service's workers, the batch runner, animations) drives.

`execute_job` resumes from the run checkpoint when there is one (so a job killed with the
machine goes on where its last checkpoint left it), writes a checkpoint every
`options.checkpoint_every` steps, step images, progress frames for the video, and at the end the
image(s) with their settings inside (and, for an image that stopped early, the step it stopped
at), the settings file and the video. Every file is written atomically. The loop itself knows
nothing of this.

Where the files go is a `JobFiles` (`vqclip.jobs.files`): a job folder, or the files around a
user's output path.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vqclip.atomic import atomic_write_text
from vqclip.generate.checkpoint import load_run_state
from vqclip.generate.config import GenerateConfig
from vqclip.generate.run import GenerationError, Run, Step, StepAbandoned
from vqclip.jobs.files import JobFiles, numbered
from vqclip.jobs.models import ModelCache
from vqclip.jobs.options import JobOptions
from vqclip.jobs.status import DONE, FAILED, PARTIAL, STOPPED, stopped_images_text
from vqclip.jobs.threads import use_threads, with_threads


@dataclass
class JobResult:
    status: str  # vqclip.jobs.status: done, partial, failed or stopped
    config: GenerateConfig  # as run: seed, size and threads resolved
    steps: int
    seconds: float
    images: list[Path] = field(default_factory=list)
    video: Path | None = None
    error: str | None = None
    stopped_images: dict[int, int] = field(default_factory=dict)  # image index -> step
    rescued: list[tuple[Path, str]] = field(default_factory=list)  # (where it went, why)
    warnings: list[str] = field(default_factory=list)  # files that could not be written
    size: tuple[int, int] | None = None  # (W, H) of its images: the size rounded to the VQGAN


def execute_job(
    config: GenerateConfig,
    files: JobFiles | str | Path,
    *,
    options: JobOptions | None = None,
    models: ModelCache | None = None,
    device: str | None = None,
    workers: int = 1,
    state: dict | None = None,
    on_start: Callable[[Run], None] | None = None,
    on_step: Callable[[Step, Run], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> JobResult:
    """Carry out `config` into `files` (a `JobFiles`, or a job folder), resuming from `state`
    or from the files' checkpoint if one is there.

    `on_start(run)` sees the run before its first step; `on_step(step, run)` every step
    (progress, previews); `should_stop()` is asked after every step, the last one too, and
    between the rounds of a prior's redraw (which it cuts short, undoing its step): when true,
    the job writes its checkpoint and returns "stopped" (a later call resumes it). `device`
    overrides the config's (a worker's own GPU) without changing the settings, so any worker
    can resume the job; `workers` is how many jobs the door runs side by side (it divides the
    default thread count); `on_checkpoint(run_dir)` follows every checkpoint written (to copy
    it to shared storage)."""
    from vqclip import __version__

    files = files if isinstance(files, JobFiles) else JobFiles.folder(files)
    options = options or JobOptions()
    started = time.perf_counter()
    if state is None and files.has_checkpoint():
        state = load_run_state(files.run_dir)
    if state is not None and config.threads is None:
        config = config.replace(threads=state["config"].get("threads"))
    config = with_threads(config, workers)
    use_threads(config.threads)
    models = models or ModelCache()
    vqgan, clips = models.get(config)
    try:
        run = Run(
            config,
            vqgan=vqgan,
            clips=clips,
            extensions=models.extensions(config),
            device=device,
            # asked during a start drawn from a prior too, between its rounds
            should_stop=should_stop,
            state=state,  # a resumed run makes no start of its own
        )
    except StepAbandoned:  # stopped before the first step: nothing to checkpoint
        return JobResult(STOPPED, config, 0, time.perf_counter() - started)
    config = run.config
    result = JobResult(STOPPED, config, run.step_index, 0.0)
    if files.settings is not None:
        atomic_write_text(files.settings, json.dumps(config.to_dict(), indent=2))
    frame_every = options.frames_every(config.iterations)
    if on_start is not None:
        on_start(run)

    def metadata(index: int) -> dict:
        meta = {
            "vqclip_version": __version__,
            "config": config.to_dict(),
            "image_index": index,
            "step": run.step_index,
            "size": list(run.image_size),
        }
        meta.update(run.notes(index))  # e.g. the class a prior took from the prompt
        stopped = run.stopped_images.get(index)
        if stopped is not None:
            meta["stopped_at_step"] = stopped  # its loss became NaN: its last good image
        return meta

    def write(what: str, action: Callable[..., object], *args) -> None:
        """Files beside the image (step images, frames, the video): a failure is a warning,
        the run goes on."""
        try:
            action(*args)
        except OSError as e:
            result.warnings.append(f"could not write {what}: {e.strerror or e}")

    def checkpoint() -> bool:
        from vqclip.errors import CheckpointError

        try:
            run.save_checkpoint(files.run_dir)
        except OSError as e:
            result.warnings.append(
                f"could not write the run checkpoint to {files.run_dir}: {e.strerror or e}"
            )
            return False
        except CheckpointError as e:
            result.warnings.append(str(e))
            return False
        if on_checkpoint is not None:
            on_checkpoint(files.run_dir)
        return True

    interrupted = False
    try:
        for step in run.iterate():
            if on_step is not None:
                on_step(step, run)
            if frame_every and step.index % frame_every == 0:
                frame = files.frames_dir / f"{step.index:05d}.png"
                write(str(frame), _save, step.image[0], frame)
            if options.save_every and step.index % options.save_every == 0:
                name = files.steps_dir / f"{step.index:05d}{files.image.suffix}"
                for i, path in enumerate(numbered(name, config.batch_size)):
                    write(str(path), _save, step.image[i], path, metadata(i))
            at_end = step.index == config.iterations
            every = options.checkpoint_every
            if every and step.index % every == 0 and not at_end:
                checkpoint()
            # the last step too: a stop asked for during it is a stop (its checkpoint holds
            # the finished run, and a resume writes the image), never a silent finish
            if should_stop is not None and should_stop():
                interrupted = True
                break
        else:
            result.status = DONE
    except GenerationError as e:
        result.status, result.error = FAILED, str(e)
    except (KeyboardInterrupt, StepAbandoned):
        # a second Ctrl-C inside a step, or a stop inside a redraw: the step was undone, so
        # the checkpoint is the step before
        interrupted = True
    if interrupted:
        if not checkpoint() and files.rescue:  # keep the work as an image at least
            from vqclip.output import rescue_dir

            images = run.image() if run.at_step_boundary else run.last_good_image()
            for i, path in enumerate(files.images(config.batch_size)):
                where = rescue_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{path.name}"
                result.rescued.append((_save(images[i], where, metadata(i)), "stopped"))
        result.steps, result.seconds = run.step_index, time.perf_counter() - started
        result.size = run.image_size
        return result

    result.stopped_images = dict(run.stopped_images)
    if result.status == DONE and result.stopped_images:
        result.status, result.error = PARTIAL, stopped_images_text(result.stopped_images)
    images = run.image() if result.status != FAILED else run.last_good_image()
    for i, path in enumerate(files.images(config.batch_size)):
        result.images.append(_save_result(images[i], path, metadata(i), files, result))
    if options.video and result.status != FAILED:
        write(str(files.video), lambda: setattr(result, "video", _write_video(files)))
    if result.status in (DONE, PARTIAL) and not files.keep_run and not result.rescued:
        shutil.rmtree(files.run_dir, ignore_errors=True)
    elif options.checkpoint_every and result.status in (DONE, PARTIAL):
        checkpoint()  # the finished state, for "continue for N more steps"
    result.steps, result.seconds = run.step_index, time.perf_counter() - started
    result.size = run.image_size
    return result


def _save(image, path: Path, metadata: dict | None = None) -> Path:
    from vqclip.output import save_image

    return save_image(image, path, metadata)


def _save_result(image, path: Path, metadata: dict, files: JobFiles, result: JobResult) -> Path:
    from vqclip.output import save_image, save_image_or_rescue

    if not files.rescue:
        return save_image(image, path, metadata)
    where, why = save_image_or_rescue(image, path, metadata)
    if why is not None:
        result.rescued.append((where, f"could not write {path} ({why})"))
    return where


def _write_video(files: JobFiles, fps: int = 30) -> Path | None:
    """The progress frames as an mp4 (the `video` extra); None without frames."""
    from vqclip.generate.prompts import load_image
    from vqclip.output import VideoWriter

    frames = sorted(files.frames_dir.glob("*.png"))
    if not frames:
        return None
    writer = VideoWriter(files.video, fps=fps)
    for frame in frames:
        writer.add(load_image(frame))
    return writer.close()
