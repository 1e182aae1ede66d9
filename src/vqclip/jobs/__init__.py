"""What every door shares: one job carried out into its files (`execute_job`), the options of
the files it writes (`JobOptions`), the models a worker keeps loaded (`ModelCache`), how a job
ended (`status`) and how many CPU threads it runs on (`threads`)."""

from vqclip.jobs.execute import (
    FRAMES_DIR,
    RUN_DIR,
    SETTINGS_FILE,
    STEPS_DIR,
    VIDEO_FILE,
    JobFiles,
    JobResult,
    execute_job,
    image_names,
    numbered,
)
from vqclip.jobs.models import ModelCache
from vqclip.jobs.options import JOB_OPTION_NAMES, JobOptions

__all__ = [
    "FRAMES_DIR",
    "JOB_OPTION_NAMES",
    "RUN_DIR",
    "SETTINGS_FILE",
    "STEPS_DIR",
    "VIDEO_FILE",
    "JobFiles",
    "JobOptions",
    "JobResult",
    "ModelCache",
    "execute_job",
    "image_names",
    "numbered",
]
