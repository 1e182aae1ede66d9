"""A finished job asked for more steps: a new job folder whose run checkpoint is the old one's
with a larger total, so `execute_job` resumes it at the old job's last step and the new image is
the one a run asked for that many steps from the start would make."""

from __future__ import annotations

import shutil
from pathlib import Path

from vqclip.errors import CheckpointError, ConfigError
from vqclip.generate.config import GenerateConfig, declaration
from vqclip.jobs.files import FRAMES_DIR, RUN_DIR, JobFiles

# "N more steps" takes the declared bound of a run's steps, not one of its own.
MAX_MORE_STEPS = declaration("iterations")["high"]


def can_continue(folder: Path) -> bool:
    return JobFiles.folder(folder).has_checkpoint()


def check_more_steps(more: object) -> int:
    if not isinstance(more, int) or isinstance(more, bool) or not 1 <= more <= MAX_MORE_STEPS:
        raise ConfigError(
            f"iterations={more!r}: give a whole number of steps, 1 to {MAX_MORE_STEPS}",
            field="iterations",
        )
    return more


def continue_job(source: Path, target: Path, more: int, *, frames: bool) -> GenerateConfig:
    """Set up `target` to go on from the job in `source` for `more` steps; the new job's
    config. `frames`: copy the old job's video frames too, so the new video is the whole run.
    CheckpointError when `source` holds no run checkpoint to go on from."""
    from vqclip.generate.checkpoint import load_run_state, save_run_state

    more = check_more_steps(more)
    try:
        state = load_run_state(source / RUN_DIR)
        config = GenerateConfig.from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"its checkpoint's settings cannot be read: {e}")
    config = config.replace(iterations=state["step"] + more)
    state["config"] = config.to_dict()
    try:
        save_run_state(state, target / RUN_DIR)
        if frames and (source / FRAMES_DIR).is_dir():
            (target / FRAMES_DIR).mkdir(exist_ok=True)
            for frame in sorted((source / FRAMES_DIR).glob("*.png")):
                shutil.copyfile(frame, target / FRAMES_DIR / frame.name)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return config
