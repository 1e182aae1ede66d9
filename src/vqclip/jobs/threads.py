"""CPU threads of a job: a setting that changes the image, so it is resolved once and recorded.

On a CPU, torch splits its reductions by thread count, so the same seed gives another image with
another count (every pixel differs). A job's thread count is therefore part of its settings
(`GenerateConfig.threads`): resolved before the run, stored in the image's metadata and in the
run checkpoint, and set from there when a run is resumed or rerun, whichever door runs it.

The default is the machine's physical cores divided among the workers a door starts: on a
2-core machine two processes of two threads each spin against each other and run many times
slower than one thread each.
"""

from __future__ import annotations

from vqclip.errors import ConfigError
from vqclip.generate.config import GenerateConfig
from vqclip.omp import available_cpus, physical_cores

__all__ = ["default_threads", "physical_cores", "thread_limit", "use_threads", "with_threads"]


def default_threads(workers: int = 1) -> int:
    return max(1, physical_cores() // max(1, workers))


def thread_limit() -> int:
    """The most threads a job may ask for here: 4 per CPU this process may use (at least 8).
    More only spin against each other (1000 threads on 2 cores put the load at 245)."""
    return max(8, 4 * available_cpus())


def with_threads(config: GenerateConfig, workers: int = 1) -> GenerateConfig:
    """`config` with its thread count resolved (kept when it names one, up to the machine's
    bound: ConfigError above it)."""
    if config.threads is not None:
        limit = thread_limit()
        if config.threads > limit:
            raise ConfigError(
                f"threads={config.threads}: this machine takes at most {limit} (4 per CPU); "
                "an image made with more threads reproduces only on a machine that can run them",
                field="threads",
            )
        return config
    return config.replace(threads=default_threads(workers))


def use_threads(count: int) -> None:
    """Run this process's torch work on `count` threads (the job's recorded count)."""
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
