"""`vqclip batch`: specs to items, groups of latents, the manifest, resume, storage."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from vqclip.batch.plan import MAX_LINE_BYTES, Item, parse_item, plan_units, read_specs
from vqclip.batch.runner import prepare_batch, run_local
from vqclip.batch.storage import Storage
from vqclip.cli import main
from vqclip.errors import ConfigError
from vqclip.generate.checkpoint import load_run_state
from vqclip.jobs import JobOptions
from vqclip.output import read_image_metadata


@pytest.fixture
def spec(model_files):
    """A spec of the tiny models saved as files: a run takes milliseconds."""
    vqgan, clip = model_files[1], model_files[3]

    def make(prompt, **changes):
        base = {"prompt": prompt, "vqgan": vqgan, "clip": [clip], "size": [32, 32]}
        base.update(iterations=3, cutn=4, device="cpu", precision="fp32")
        return {**base, **changes}

    return make


def write_specs(path, *lines):
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return str(path)


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def pixels(path):
    return np.asarray(Image.open(path))


@pytest.mark.slow
def test_a_batch_makes_every_item_and_records_it_in_the_manifest(spec, tmp_path):
    specs = write_specs(
        tmp_path / "specs.jsonl",
        spec("a tree"),
        "# a comment, then a blank line",
        "",
        spec("a house"),
        spec("a boat", seed=7),
        {"prompt": "a cat", "iterations": 0},
        spec("a tree ^ a house", animation={"frames": 2, "steps_per_frame": 1, "video": False}),
    )
    out = tmp_path / "out"
    summary = run_local(prepare_batch(specs, str(out)))
    assert (summary.done, summary.failed, summary.pending) == (4, 1, 0)
    records = manifest(out)
    assert [r["line"] for r in records] == [1, 4, 5, 6, 7]
    assert [r["status"] for r in records] == ["done", "done", "done", "failed", "done"]
    assert "line 6: iterations=0: must be at least 1" in records[3]["error"]
    # The two items without a seed of their own were one batch of latents, one image each.
    assert records[0]["batch_of"] == records[1]["batch_of"] == 2
    assert "batch_of" not in records[2] and records[2]["seed"] == 7
    for record, prompt in zip(records[:3], ["a tree", "a house", "a boat"], strict=True):
        meta = read_image_metadata(out / record["outputs"][0])
        assert meta["config"]["prompts"][meta["image_index"]] == prompt
        assert record["spec"]["prompt"] == prompt and record["seconds"] > 0
    assert records[4]["frames"] == 2 and len(records[4]["outputs"]) == 2
    assert all((out / path).is_file() for r in records for path in r["outputs"])


@pytest.mark.slow
def test_a_failing_item_is_recorded_and_the_rest_go_on(spec, tmp_path):
    specs = write_specs(
        tmp_path / "specs.jsonl", spec("a tree", init_image="missing.png"), spec("a house")
    )
    summary = run_local(prepare_batch(specs, str(tmp_path / "out")))
    first, second = manifest(tmp_path / "out")
    assert first["status"] == "failed" and "'missing.png' does not exist" in first["error"]
    assert second["status"] == "done" and summary.failed == 1


@pytest.mark.slow
def test_a_stopped_batch_resumes_to_the_images_of_an_unbroken_one(spec, tmp_path):
    lines = [spec("a tree"), spec("a house"), spec("a boat", seed=1)]
    specs = write_specs(tmp_path / "specs.jsonl", *lines)
    whole = tmp_path / "whole"
    run_local(prepare_batch(specs, str(whole), group=2))
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(whole / "batch.json", part / "batch.json")  # the same batch seed
    steps = []
    stop_after_two = lambda: steps.append(1) or len(steps) == 2  # noqa: E731
    summary = run_local(
        prepare_batch(specs, str(part), group=2),
        options=JobOptions(checkpoint_every=1),
        should_stop=stop_after_two,
    )
    assert summary.stopped and summary.pending == 3 and manifest(part) == []
    seen = []
    plan = prepare_batch(specs, str(part), group=2)
    assert [u.kind for u in plan.units] == ["group", "image"]
    summary = run_local(plan, on_step=lambda unit: seen.append(unit.kind))
    assert seen == ["group", "image", "image", "image"]  # the group resumed at its step 3
    assert (summary.done, summary.pending) == (3, 0)
    for a, b in zip(manifest(whole), manifest(part), strict=True):
        assert a["outputs"] == b["outputs"] and a["seed"] == b["seed"]
        assert np.array_equal(pixels(whole / a["outputs"][0]), pixels(part / b["outputs"][0]))


@pytest.mark.slow
def test_a_rerun_skips_finished_items_and_retries_failed_ones_when_asked(spec, tmp_path):
    specs = write_specs(tmp_path / "s.jsonl", spec("a tree"), spec("a boat", init_image="x.png"))
    out = str(tmp_path / "out")
    run_local(prepare_batch(specs, out))
    assert prepare_batch(specs, out).units == []
    retry = prepare_batch(specs, out, retry_failed=True)
    assert [unit.lines for unit in retry.units] == [(2,)]
    # Lines added at the end join a started batch.
    with open(specs, "a") as f:
        f.write(json.dumps(spec("a house")) + "\n")
    assert [unit.lines for unit in prepare_batch(specs, out).units] == [(3,)]


def test_items_are_known_by_their_spec_not_their_line(spec, tmp_path):
    """A comment added at the top leaves finished items finished; a failed line fixed in place
    is a new item that runs (with --retry-failed or without)."""
    specs = write_specs(tmp_path / "s.jsonl", spec("a tree"), spec("a boat", init_image="x.png"))
    out = str(tmp_path / "out")
    run_local(prepare_batch(specs, out))
    assert [r["status"] for r in manifest(tmp_path / "out")] == ["done", "failed"]
    write_specs(tmp_path / "s.jsonl", "# my batch", spec("a tree"), spec("a boat", init_image=None))
    plan = prepare_batch(specs, out, retry_failed=True)
    assert [unit.lines for unit in plan.units] == [(3,)]
    assert [r["line"] for r in manifest(tmp_path / "out")] == [2]  # where the item is now
    run_local(plan)
    assert [r["status"] for r in manifest(tmp_path / "out")] == ["done", "done"]


def test_repeated_specs_are_distinct_items(tmp_path):
    from vqclip.batch.plan import item_keys

    a = json.dumps({"prompt": "x", "model": "toy"})
    a_spaced = '{"model": "toy",   "prompt": "x"}'
    keys = item_keys([(1, a), (2, a_spaced), (3, '{"prompt": "y"}')])
    assert keys[1] == keys[0] + "-2" and len(set(keys)) == 3


def toy_items(*specs, seed=5):
    return [parse_item(i, json.dumps({"model": "toy", **s}), seed) for i, s in enumerate(specs, 1)]


def test_compatible_items_are_grouped_and_the_others_run_alone(tmp_path):
    items = toy_items(
        {"prompt": "a"},
        {"prompt": "b", "seed": 3},
        {"prompt": "c"},
        {"prompt": "d", "size": [32, 32]},
        {"prompt": "e"},
        {"prompt": "f", "animation": {"frames": 2, "video": False}},
        {"prompt": "g"},
    )
    storage = Storage(str(tmp_path))
    units = plan_units(storage, items, {i.key for i in items}, 3, 5)
    assert [(u.kind, u.lines) for u in units] == [
        ("group", (1, 3, 5)),
        ("image", (2,)),
        ("image", (4,)),  # another size: alone in its own group of one
        ("animation", (6,)),
        ("image", (7,)),
    ]
    group = units[0]
    assert group.config["prompts"] == ["a", "c", "e"] and group.config["batch_size"] == 3
    # Seeds follow from the batch seed and the spec: the same plan again, another seed apart.
    assert toy_items({"prompt": "a"})[0].config.seed == items[0].config.seed
    assert toy_items({"prompt": "a"}, seed=6)[0].config.seed != items[0].config.seed


def test_a_started_group_is_kept_when_its_items_are_still_pending(tmp_path):
    items = toy_items({"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"})
    keys = [item.key for item in items]
    storage = Storage(str(tmp_path))
    (first,) = plan_units(storage, items[:2], set(keys[:2]), 4, 5)
    storage.write_text(f"{first.folder}/group.json", json.dumps({"keys": keys[:2]}))
    units = plan_units(storage, items, set(keys), 4, 5)
    assert [u.lines for u in units] == [(1, 2), (3,)] and units[0].folder == first.folder


@pytest.mark.slow
def test_a_group_that_does_not_fit_in_memory_runs_its_items_one_by_one(
    spec, tmp_path, monkeypatch, tiny_vqgan, tiny_clip
):
    from vqclip.generate.config import GenerateConfig
    from vqclip.generate.memory import estimate_bytes

    one = GenerateConfig(prompts=("x",), cutn=4)
    need = [
        estimate_bytes(one.replace(batch_size=b), tiny_vqgan, [tiny_clip], (32, 32)) for b in (1, 2)
    ]
    monkeypatch.setattr("vqclip.devices.available_memory_bytes", lambda device: sum(need) // 2)
    specs = write_specs(tmp_path / "s.jsonl", spec("a tree"), spec("a house"))
    plan = prepare_batch(specs, str(tmp_path / "out"))
    assert [u.kind for u in plan.units] == ["group"]
    summary = run_local(plan)
    assert summary.done == 2
    records = manifest(tmp_path / "out")
    assert all("batch_of" not in r for r in records)
    assert [r["outputs"] for r in records] == [[f"items/{r['id']}/image.png"] for r in records]


@pytest.mark.slow
def test_outputs_can_go_to_an_fsspec_url(spec, tmp_path):
    import fsspec

    url = f"local://{tmp_path}/shared"  # fsspec's local filesystem, through the URL path
    specs = write_specs(tmp_path / "s.jsonl", spec("a tree", seed=1), spec("a house", seed=2))
    stop = []
    summary = run_local(
        prepare_batch(specs, url),
        options=JobOptions(checkpoint_every=1),
        should_stop=lambda: stop.append(1) or len(stop) == 2,
    )
    assert summary.pending == 2
    fs, root = fsspec.core.url_to_fs(url)
    key = prepare_batch(specs, url).items[0].key
    assert fs.exists(f"{root}/items/{key}/run/state.bin")  # the checkpoint went up at once
    summary = run_local(prepare_batch(specs, url))
    assert summary.done == 2
    records = [json.loads(x) for x in fs.cat_file(f"{root}/manifest.jsonl").splitlines()]
    assert [r["steps"] for r in records] == [3, 3]
    image = fs.cat_file(f"{root}/{records[0]['outputs'][0]}")
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    fs.rm(root, recursive=True)


def test_bad_specs_files_get_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_specs(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n# nothing\n")
    with pytest.raises(ConfigError, match="has no specs"):
        read_specs(tmp_path / "empty.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_specs(tmp_path / "bin.jsonl")
    (tmp_path / "huge.jsonl").write_text('{"prompt": "x"}\n' + "x" * (MAX_LINE_BYTES + 5) + "\n")
    with pytest.raises(ConfigError, match="line 2: longer than 64 KiB"):
        read_specs(tmp_path / "huge.jsonl")
    item = parse_item(3, '["a list"]', 1)
    assert isinstance(item, Item) and "line 3: expected a JSON object" in item.error
    assert "unknown settings ['promt']" in parse_item(4, '{"promt": "x"}', 1).error


@pytest.mark.slow
def test_the_batch_command_runs_the_toy_pair_and_sets_its_exit_code(tmp_path, capsys):
    toy = {"model": "toy", "iterations": 2, "cutn": 4}
    specs = write_specs(
        tmp_path / "specs.jsonl", {"prompt": "a red circle", **toy}, {"prompt": "a star", **toy}
    )
    assert main(["batch", specs, "--out", "out", "--no-progress"]) == 0
    assert "2 done, 0 failed, 0 left" in capsys.readouterr().err
    assert [r["status"] for r in manifest(tmp_path / "out")] == ["done", "done"]
    with open(specs, "a") as f:
        f.write('{"prompt": "a square", "model": "nonesuch"}\n')
    assert main(["batch", specs, "--out", "out", "--no-progress"]) == 1
    assert "line 3: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "2"], "--workers counts Ray actors"),
        (["--group", "0"], "--group=0: give 1 or more"),
        (["--checkpoint-every", "-1"], "checkpoint_every=-1: must be at least 0"),
        (["--ray", "--devices", "cuda:0"], "--devices picks local workers"),
        (["--out", "memory://x"], "memory:// keeps nothing once this process ends"),
        (["--devices", "cpu", "cuda:3"], "device='cuda:3'"),
    ],
)
def test_bad_batch_flags_are_refused(tmp_path, capsys, flags, message):
    specs = write_specs(tmp_path / "s.jsonl", {"prompt": "x", "model": "toy"})
    assert main(["batch", specs, "--out", "out", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_kill_9_loses_at_most_one_checkpoint_interval_of_one_item(tmp_path):
    toy = {"model": "toy", "iterations": 12, "cutn": 4}
    specs = write_specs(
        tmp_path / "specs.jsonl",
        {"prompt": "a red circle", "seed": 1, **toy},
        {"prompt": "a star", "seed": 2, **toy},
    )
    argv = ["batch", specs, "--out", "killed", "--checkpoint-every", "3", "--no-progress"]
    process = subprocess.Popen(
        [sys.executable, "-c", "from vqclip.cli import console; console()", *argv], cwd=tmp_path
    )
    key = prepare_batch(specs, str(tmp_path / "probe")).items[0].key
    checkpoint = tmp_path / "killed" / "items" / key / "run" / "config.json"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.is_file(), "no checkpoint was written before the kill"
    kept = load_run_state(checkpoint.parent)["step"]  # the state, not its summary beside it
    assert manifest(tmp_path / "killed") == []  # the manifest is whole, with nothing finished
    steps = {}
    plan = prepare_batch(specs, str(tmp_path / "killed"))
    summary = run_local(
        plan, on_step=lambda unit: steps.update({unit.lines: steps.get(unit.lines, 0) + 1})
    )
    assert summary.done == 2 and steps[(1,)] == 12 - kept and steps[(2,)] == 12
    assert main(["batch", specs, "--out", "whole", "--no-progress"]) == 0
    for a, b in zip(manifest(tmp_path / "whole"), manifest(tmp_path / "killed"), strict=True):
        assert np.array_equal(
            pixels(tmp_path / "whole" / a["outputs"][0]),
            pixels(tmp_path / "killed" / b["outputs"][0]),
        )


def test_a_batch_records_its_thread_count_so_every_runner_makes_the_same_picture(spec, tmp_path):
    from vqclip.jobs.threads import default_threads

    specs = write_specs(tmp_path / "s.jsonl", spec("a tree"), spec("a boat", threads=1))
    out = str(tmp_path / "out")
    first = prepare_batch(specs, out, workers=1)
    assert first.threads == default_threads(1)
    assert [item.config.threads for item in first.items] == [default_threads(1), 1]
    assert json.loads((tmp_path / "out" / "batch.json").read_text())["threads"] == first.threads
    # A rerun by a runner with other workers (or Ray) keeps the recorded count.
    again = prepare_batch(specs, out, workers=64)
    assert [item.config.threads for item in again.items] == [first.threads, 1]


def test_a_batch_whose_items_all_fail_reports_no_throughput(spec, tmp_path, capsys):
    """Items that fail at once (here a missing init image; offline, a missing model) made
    nothing: no "items/hour" from two failures in a few milliseconds."""
    specs = write_specs(
        tmp_path / "specs.jsonl",
        spec("a tree", init_image="missing.png"),
        spec("a house", init_image="missing.png"),
    )
    assert main(["batch", specs, "--out", "out", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "0 done, 2 failed, 0 left" in err and "items/hour" not in err, err


def test_a_batch_rerun_with_nothing_left_reports_no_throughput(spec, tmp_path, capsys):
    specs = write_specs(tmp_path / "specs.jsonl", spec("a tree"))
    assert main(["batch", specs, "--out", "out", "--no-progress"]) == 0
    assert "items/hour" in capsys.readouterr().err  # the one item made
    assert main(["batch", specs, "--out", "out", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "1 done, 0 failed, 0 left" in err and "items/hour" not in err, err


@pytest.mark.parametrize("out", ["a-file", "a-file/sub"])
def test_a_batch_out_that_is_or_goes_through_a_file_is_named(tmp_path, capsys, out):
    (tmp_path / "a-file").write_text("the user's")
    specs = write_specs(tmp_path / "s.jsonl", {"prompt": "x", "model": "toy"})
    assert main(["batch", specs, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "'a-file'" in err and "a file; give a folder" in err and "File exists" not in err, err
    assert (tmp_path / "a-file").read_text() == "the user's"
