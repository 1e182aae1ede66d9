"""What every door shares: one job carried out into its files (`execute_job`), the names of
those files (`files`), the options of the files it writes (`JobOptions`), the models a worker
keeps loaded (`ModelCache`), how a job ended (`status`) and how many CPU threads it runs on
(`threads`)."""

from vqclip.jobs.execute import JobResult, execute_job
from vqclip.jobs.files import (
    FRAMES_DIR,
    IMAGE_FILE,
    PREVIEW_FILE,
    RUN_DIR,
    SETTINGS_FILE,
    STEPS_DIR,
    THUMB_FILE,
    VIDEO_FILE,
    JobFiles,
    image_names,
    numbered,
)
from vqclip.jobs.models import ModelCache
from vqclip.jobs.options import JOB_OPTION_NAMES, JobOptions

__all__ = [
    "FRAMES_DIR",
    "IMAGE_FILE",
    "JOB_OPTION_NAMES",
    "PREVIEW_FILE",
    "RUN_DIR",
    "SETTINGS_FILE",
    "STEPS_DIR",
    "THUMB_FILE",
    "VIDEO_FILE",
    "JobFiles",
    "JobOptions",
    "JobResult",
    "ModelCache",
    "execute_job",
    "image_names",
    "numbered",
]
