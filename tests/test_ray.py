"""The batch on a local Ray instance with the toy pair: actors, a dead worker's unit retried
from its checkpoint, a unit that keeps killing its worker recorded as failed, the CLI."""

import json
import os

import pytest

from vqclip.batch.ray_runner import MAX_DEATHS, UnitActor, run_ray
from vqclip.batch.runner import prepare_batch
from vqclip.cli import main

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


def test_a_unit_whose_worker_died_is_retried_from_its_checkpoint(tmp_path):
    crashed, resumed_at = tmp_path / "crashed", tmp_path / "resumed_at"

    class CrashOnce(UnitActor):
        """Kills its own process at step 2 of the first unit, once: step 1 is checkpointed."""

        def __init__(self, out, options=None):
            super().__init__(out, {"checkpoint_every": 1})
            real = self.worker.run

            def run(unit, on_step=None, should_stop=None):
                def hook(step, _run):
                    if not crashed.exists() and step.index == 2 and unit.lines == (1,):
                        crashed.write_text("x")
                        os._exit(1)
                    if crashed.exists() and unit.lines == (1,) and not resumed_at.exists():
                        resumed_at.write_text(str(step.index))

                return real(unit, on_step=hook, should_stop=should_stop)

            self.worker.run = run

    specs = write_specs(tmp_path / "s.jsonl", "a red circle", "a blue square", "a star")
    out = tmp_path / "out"
    summary = run_ray(prepare_batch(specs, str(out), group=1), actor_class=CrashOnce)
    assert crashed.exists() and resumed_at.read_text() == "2"
    assert (summary.done, summary.failed, summary.pending) == (3, 0, 0)
    records = manifest(out)
    assert [r["status"] for r in records] == ["done"] * 3 and records[0]["steps"] == 3
    key = prepare_batch(specs, str(out), group=1).items[0].key
    note = json.loads((out / "items" / key / "attempts.json").read_text())
    assert note == {"unfinished": 0}
    assert prepare_batch(specs, str(out), group=1).units == []  # a rerun has nothing to do


def test_a_unit_that_keeps_killing_its_worker_is_recorded_as_failed(tmp_path):
    class CrashOnStar(UnitActor):
        def __init__(self, out, options=None):
            super().__init__(out, options)
            real = self.worker.run

            def run(unit, **kwargs):
                if "star" in unit.config["prompts"][0]:
                    os._exit(1)
                return real(unit, **kwargs)

            self.worker.run = run

    specs = write_specs(tmp_path / "s.jsonl", "a red circle", "a star")
    summary = run_ray(prepare_batch(specs, str(tmp_path / "out"), group=1), actor_class=CrashOnStar)
    assert (summary.done, summary.failed) == (1, 1)
    failed = manifest(tmp_path / "out")[1]
    assert f"died {MAX_DEATHS} times" in failed["error"] and failed["line"] == 2


def test_the_batch_command_runs_on_ray(tmp_path, capsys):
    specs = write_specs(tmp_path / "s.jsonl", "a red circle", "a green square", "a star")
    assert main(["batch", specs, "--out", "out", "--ray", "--no-progress"]) == 0
    assert "3 done, 0 failed, 0 left" in capsys.readouterr().err
    records = manifest(tmp_path / "out")
    assert [r["batch_of"] for r in records] == [3, 3, 3]  # one group of latents by default
    assert all((tmp_path / "out" / r["outputs"][0]).is_file() for r in records)
