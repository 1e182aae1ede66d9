"""The batch on a local Ray instance with the toy pair: actors, a dead worker's unit retried
from its checkpoint, a unit that keeps killing its worker recorded as failed, the CLI. Workers
die the way they do in production: their processes are killed from outside."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from vqclip.batch.ray_runner import MAX_DEATHS, run_ray
from vqclip.batch.runner import prepare_batch
from vqclip.cli import main
from vqclip.jobs import JobOptions

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

TOY = {"model": "toy", "iterations": 3, "cutn": 4}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_specs(path, *prompts, **extra):
    lines = [json.dumps({"prompt": p, **TOY, **extra}) for p in prompts]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


class ActorKiller:
    """Kills Ray's actor processes (those running vqclip's `UnitActor`) from outside, the way
    an out-of-memory kill or a lost node ends them, whenever the run checkpoint of the item with
    `key` is written anew; `times` kills at most. Notes the checkpoint's step at each look."""

    def __init__(self, out, key, times):
        self.state = out / "items" / key / "run" / "state.bin"
        self.times, self.kills, self.steps = times, [], []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        from vqclip.generate.checkpoint import load_run_state

        seen = None
        while not self._done.is_set():
            try:
                stamp = self.state.stat().st_mtime_ns
                step = load_run_state(self.state.parent)["step"]
            except Exception:  # not written yet, or replaced while read
                time.sleep(0.02)
                continue
            if stamp != seen:
                seen = stamp
                self.steps.append(step)
                if len(self.kills) < self.times and _kill_actors():
                    self.kills.append(step)
            time.sleep(0.02)

    def stop(self):
        self._done.set()
        self._thread.join()


def _kill_actors() -> bool:
    killed = False
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"UnitActor" in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
                killed = True
        except OSError:
            pass
    return killed


def test_a_unit_whose_worker_died_is_retried_from_its_checkpoint(tmp_path):
    specs = write_specs(tmp_path / "s.jsonl", "a red circle", "a blue square", iterations=12)
    out = tmp_path / "out"
    plan = prepare_batch(specs, str(out), group=1)
    killer = ActorKiller(out, plan.items[0].key, times=1)
    try:
        summary = run_ray(plan, workers=1, options=JobOptions(checkpoint_every=1))
    finally:
        killer.stop()
    assert len(killer.kills) == 1, killer.steps
    killed_at = killer.kills[0]
    after = killer.steps[killer.steps.index(killed_at) + 1 :]
    assert after and min(after) > killed_at, killer.steps  # resumed, not started over
    assert (summary.done, summary.failed, summary.pending) == (2, 0, 0)
    records = manifest(out)
    assert [r["status"] for r in records] == ["done"] * 2 and records[0]["steps"] == 12
    note = json.loads((out / "items" / plan.items[0].key / "attempts.json").read_text())
    assert note == {"unfinished": 0}
    assert prepare_batch(specs, str(out), group=1).units == []  # a rerun has nothing to do


def test_a_unit_that_keeps_killing_its_worker_is_recorded_as_failed(tmp_path):
    specs = write_specs(tmp_path / "s.jsonl", "a star", "a red circle", iterations=12)
    out = tmp_path / "out"
    plan = prepare_batch(specs, str(out), group=1)
    killer = ActorKiller(out, plan.items[0].key, times=MAX_DEATHS + 2)
    try:
        summary = run_ray(plan, workers=1, options=JobOptions(checkpoint_every=1))
    finally:
        killer.stop()
    assert len(killer.kills) >= MAX_DEATHS, killer.steps
    assert (summary.done, summary.failed) == (1, 1)
    failed = manifest(out)[0]
    assert f"died {MAX_DEATHS} times" in failed["error"] and failed["line"] == 1


def test_the_batch_command_runs_on_ray(tmp_path, capsys):
    specs = write_specs(tmp_path / "s.jsonl", "a red circle", "a green square", "a star")
    assert main(["batch", specs, "--out", "out", "--ray", "--no-progress"]) == 0
    assert "3 done, 0 failed, 0 left" in capsys.readouterr().err
    records = manifest(tmp_path / "out")
    assert [r["batch_of"] for r in records] == [3, 3, 3]  # one group of latents by default
    assert all((tmp_path / "out" / r["outputs"][0]).is_file() for r in records)
