"""`vqclip batch`: the items of a specs file carried out into a folder, resumably, by local
workers (one per GPU, or one on the CPU) or by Ray actors (`vqclip.batch.ray`).

The folder:

    batch.json          the batch's seed and the specs as first seen
    manifest.jsonl      one record per finished item, in line order: spec, status (done or
                        failed), outputs, seconds, error; rewritten whole and atomically
    items/<line>/       each item's job folder (image, settings, run checkpoint) and result.json
    groups/<lines>/     the run of a group of items optimised as one batch of latents

A rerun with the same folder skips finished items and resumes the others from their
checkpoints. Failed items are finished too; `retry_failed` runs them again.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vqclip.batch.plan import (
    Item,
    Unit,
    item_keys,
    open_batch,
    parse_item,
    plan_units,
    read_results,
    read_specs,
)
from vqclip.batch.storage import Storage
from vqclip.batch.worker import UnitWorker
from vqclip.jobs.loop import work
from vqclip.jobs.status import DONE, FAILED, PARTIAL
from vqclip.jobs.threads import default_threads
from vqclip.jobs.workers import worker_devices

MANIFEST_FILE = "manifest.jsonl"
DEFAULT_GROUP = 8


@dataclass
class BatchPlan:
    storage: Storage
    items: list[Item]
    results: dict[str, dict]  # item key -> record of every finished item
    units: list[Unit]  # the work left, in line order
    threads: int = 1  # CPU threads of every item that names none (recorded in batch.json)

    @property
    def invalid(self) -> list[Item]:
        return [item for item in self.items if item.error is not None]


@dataclass
class BatchSummary:
    done: int  # partial ones (some images of the item stopped early) included
    failed: int  # invalid lines included
    pending: int  # items left unfinished by a stop
    seconds: float
    manifest: str

    @property
    def stopped(self) -> bool:
        return self.pending > 0


def prepare_batch(
    specs: str,
    out: str,
    *,
    group: int = DEFAULT_GROUP,
    retry_failed: bool = False,
    workers: int = 1,
) -> BatchPlan:
    """Read the specs, claim or reopen the output folder, and plan the work left. Bad lines
    are items with an error (recorded as failed), not a reason to refuse the batch. `workers`:
    the local workers that will share this machine's cores (the default thread count)."""
    storage = Storage(out)
    lines = read_specs(specs)
    seed, threads = open_batch(storage, default_threads(workers))
    keys = item_keys(lines)
    items = [
        parse_item(line, text, seed, threads, key)
        for (line, text), key in zip(lines, keys, strict=True)
    ]
    results = read_results(storage, items)
    if retry_failed:
        results = {key: r for key, r in results.items() if r["status"] in (DONE, PARTIAL)}
    pending = {item.key for item in items if item.error is None and item.key not in results}
    units = plan_units(storage, items, pending, group, seed)
    write_manifest(storage, items, results)
    return BatchPlan(storage, items, results, units, threads)


def manifest_records(items: list[Item], results: dict[str, dict]) -> list[dict]:
    """One record per item, in the specs' order, with the line the item is on now."""
    records = []
    for item in items:
        if item.error is not None:
            records.append(
                {"id": item.key, "line": item.line, "spec": item.spec, "status": FAILED}
                | {"outputs": [], "seconds": 0.0, "error": item.error}
            )
        elif item.key in results:
            records.append(results[item.key] | {"line": item.line})
    return records


def write_manifest(storage: Storage, items: list[Item], results: dict[str, dict]) -> None:
    lines = [json.dumps(record) + "\n" for record in manifest_records(items, results)]
    storage.write_text(MANIFEST_FILE, "".join(lines))


class _Recorder:
    """Keeps the results as units finish and rewrites the manifest each time (thread-safe)."""

    def __init__(self, plan: BatchPlan, on_unit: Callable | None) -> None:
        self.plan = plan
        self.on_unit = on_unit
        self.lock = threading.Lock()

    def __call__(self, unit: Unit, records: list[dict]) -> None:
        with self.lock:
            for record in records:
                self.plan.results[record["id"]] = record
            write_manifest(self.plan.storage, self.plan.items, self.plan.results)
            if self.on_unit is not None:
                self.on_unit(unit, records)


def summarise(plan: BatchPlan, started: float) -> BatchSummary:
    statuses = [r["status"] for r in manifest_records(plan.items, plan.results)]
    valid = sum(item.error is None for item in plan.items)
    finished_valid = sum(1 for item in plan.items if item.key in plan.results)
    return BatchSummary(
        done=statuses.count(DONE) + statuses.count(PARTIAL),
        failed=statuses.count(FAILED),
        pending=valid - finished_valid,
        seconds=time.perf_counter() - started,
        manifest=plan.storage.path(MANIFEST_FILE),
    )


def run_local(
    plan: BatchPlan,
    *,
    devices: list[str] | None = None,
    options=None,
    on_step: Callable[[Unit], None] | None = None,
    on_unit: Callable[[Unit, list[dict]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BatchSummary:
    """Carry out the plan's units in this process: one worker per device, each with its own
    models, taking the next unit when it is free. `on_step(unit)` follows every optimiser step,
    `on_unit(unit, records)` every finished unit; `should_stop()` stops every worker after its
    current step (each writes its checkpoint), and the summary counts what is left."""
    started = time.perf_counter()
    record = _Recorder(plan, on_unit)
    pending: queue.Queue[Unit] = queue.Queue()
    for unit in plan.units:
        pending.put(unit)
    stop = threading.Event()

    def stopping() -> bool:
        if should_stop is not None and should_stop():
            stop.set()
        return stop.is_set()

    def take() -> Unit | None:
        try:
            return pending.get_nowait()
        except queue.Empty:
            return None

    def serve(device: str | None) -> None:
        worker = UnitWorker(plan.storage.out, device, options, workers=len(devices))

        def carry_out(unit: Unit) -> bool:
            step = (lambda s, r: on_step(unit)) if on_step is not None else None
            records = worker.run(unit, on_step=step, should_stop=stopping)
            if records is None:  # stopped: its checkpoint is written, the rest waits
                stop.set()
                return False
            record(unit, records)
            return True

        work(take, carry_out, stopping=stop.is_set)

    devices = worker_devices(names=devices)
    if len(devices) == 1:
        serve(devices[0])
    else:
        threads = [threading.Thread(target=serve, args=(d,), daemon=True) for d in devices]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return summarise(plan, started)
