"""The same batch on a Ray cluster: a Ray Data dataset of units mapped by a stateful callable
class, so each actor loads its models once and carries out unit after unit.

The driver plans the units exactly as the local runner does and writes the manifest as records
stream back; the actors write every output to the batch's storage (a folder all nodes share, or
an fsspec URL), so a unit retried on another actor after its worker died resumes from the
checkpoint the dead one left. On a cluster with GPUs each actor takes one (`num_gpus=1`);
without, one CPU each.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

from vqclip.batch.plan import Unit, read_json
from vqclip.batch.runner import BatchPlan, BatchSummary, _Recorder, summarise
from vqclip.batch.worker import UnitWorker
from vqclip.errors import VQClipError
from vqclip.jobs.workers import MAX_ATTEMPTS
from vqclip.omp import USER_SETTINGS, set_wait_policy

MAX_DEATHS = MAX_ATTEMPTS  # one retry count for every door (vqclip.jobs.workers)
ATTEMPTS_FILE = "attempts.json"


class UnitActor:
    """The Ray Data callable class: one `UnitWorker` (and its models) per actor.

    Ray retries a task whose actor died on a new actor. To tell a unit that kills its worker
    every time from one that met a lost node, each attempt is noted in the unit's folder
    before it starts and cleared when it ends: the count left there is the deaths in a row."""

    def __init__(self, out: str, options: dict | None = None) -> None:
        from vqclip.jobs import JobOptions

        self.worker = UnitWorker(out, None, JobOptions.from_dict(options or {}))

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        records = [json.dumps(self.run(Unit.from_json(str(u)))) for u in batch["unit"]]
        return {"unit": batch["unit"], "records": np.array(records, dtype=object)}

    def run(self, unit: Unit) -> list[dict]:
        storage, note = self.worker.storage, f"{unit.folder}/{ATTEMPTS_FILE}"
        deaths = (read_json(storage, note) or {}).get("unfinished", 0)
        if deaths >= MAX_DEATHS:
            storage.write_text(note, json.dumps({"unfinished": 0}))
            why = (
                f"its Ray worker died {deaths} times while running it (out of memory? a lost "
                "node?); rerun with --retry-failed to try again"
            )
            return self.worker.fail(unit, why)
        storage.write_text(note, json.dumps({"unfinished": deaths + 1}))
        records = self.worker.run(unit)
        storage.write_text(note, json.dumps({"unfinished": 0}))
        return records


def _reap_when_killed() -> None:
    from vqclip.batch.ray_reaper import start_reaper

    start_reaper()


def actor_wait_policy(actors: int) -> dict[str, str]:
    """The OpenMP wait settings of the actors (vqclip.omp's rule for `actors` processes sharing
    the cores): this process's own settings, PASSIVE where several actors run."""
    environ = {k: os.environ[k] for k in USER_SETTINGS if k in os.environ}
    set_wait_policy(environ, workers=actors)
    return environ


def run_ray(
    plan: BatchPlan,
    *,
    address: str | None = None,
    workers: int | None = None,
    options=None,
    on_unit: Callable[[Unit, list[dict]], None] | None = None,
) -> BatchSummary:
    """Carry out the plan's units on Ray: the running instance if `ray.init` was called, else
    the cluster at `address` ("auto": the one this node belongs to), else a new local one.
    `workers`: actors (default: one per cluster GPU, else one per `plan.threads` CPUs: each
    actor runs its items on the thread count the plan recorded, so an item makes the same
    picture here as on the local runner). `options`: the `JobOptions` of every unit."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise VQClipError("--ray needs Ray Data: pip install 'vqclip[ray]'")
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        if address is None:  # a local instance of ours: it must not outlive a killed driver
            _reap_when_killed()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    threads = plan.threads
    workers = workers or gpus or max(1, int(resources.get("CPU", 1)) // threads)
    record = _Recorder(plan, on_unit)
    job_options = options.to_dict() if options is not None else None
    if plan.units:
        # One unit at a time per actor: a unit queued behind a long one on a busy actor would
        # wait while others idle, and die with it if it crashed.
        pool = ray.data.ActorPoolStrategy(
            size=min(workers, len(plan.units)), max_tasks_in_flight_per_actor=1
        )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the batch's own bar counts items
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        rows = [{"unit": unit.to_json()} for unit in plan.units]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        mapped = dataset.map_batches(
            UnitActor,
            fn_constructor_kwargs={"out": plan.storage.out, "options": job_options},
            batch_size=1,
            compute=pool,
            runtime_env={"env_vars": actor_wait_policy(min(workers, len(plan.units)))},
            **({"num_gpus": 1} if gpus else {"num_cpus": threads}),
        )
        for row in mapped.iter_rows():
            record(Unit.from_json(row["unit"]), json.loads(row["records"]))
    return summarise(plan, started)
