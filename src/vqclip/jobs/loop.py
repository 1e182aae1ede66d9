"""The one worker loop every door runs: take the next job, carry it out, until told to stop.

The web service's workers take jobs from the durable queue (SQLite), which others add to while
they run, so an empty queue is waited on; a batch's workers take units from the fixed plan, so
an empty plan ends them. Either way a worker stops between jobs when `stopping()` says so, and
a job that ends by a stop (its checkpoint written) ends the worker too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("vqclip.jobs")

Job = TypeVar("Job")


def work(
    take: Callable[[], Job | None],
    carry_out: Callable[[Job], bool],
    *,
    stopping: Callable[[], bool],
    idle: Callable[[float], None] | None = None,
    poll_s: float = 0.5,
) -> None:
    """Run jobs until `stopping()`. `take()` gives the next job, or None when there is none;
    then `idle(poll_s)` waits for more (a queue others add to), or, without `idle`, the loop
    ends (a fixed plan). `carry_out(job)` is False when the job was stopped and the worker must
    end. A `take` that raises (a locked or failing disk) is logged and tried again after
    `poll_s`: it does not end the worker, as long as the queue can come back."""
    while not stopping():
        try:
            job = take()
        except Exception:
            if idle is None:
                raise
            log.exception("could not take a job")
            job = None
        if job is None:
            if idle is None:
                return
            idle(poll_s)
            continue
        if not carry_out(job):
            return
