"""Batches of generation jobs and animations, run locally or on a Ray cluster."""

from vqclip.batch.runner import BatchPlan, BatchSummary, prepare_batch, run_local
from vqclip.jobs.animation import Animation, run_animation, transform_image

__all__ = [
    "Animation",
    "BatchPlan",
    "BatchSummary",
    "prepare_batch",
    "run_animation",
    "run_local",
    "transform_image",
]
