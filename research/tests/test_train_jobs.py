"""`python -m research.toy.train`: parts side by side (--jobs N), dependencies kept, files
written where `vqclip.toy.models` finds them."""

from __future__ import annotations

import json
import sys

import pytest

from research.toy.train import (
    DEFAULT_PARTS,
    FIGURES_DIR,
    NEEDS,
    PARTS,
    PRIORITY,
    PartFailed,
    default_threads,
    dependencies,
    main,
    run_parallel,
)
from vqclip.toy.judge import Judge, load_judge
from vqclip.toy.models import JUDGE_FILE


def _logging_command(record, seconds: dict[str, float], fail: str = ""):
    """A stand-in part: writes 'start <part> <time>' and 'end <part> <time>' to `record`."""

    def command(part: str) -> list[str]:
        code = (
            "import sys, time\n"
            f"open({str(record)!r}, 'a').write(f'start {part} {{time.time()}}\\n')\n"
            f"time.sleep({seconds.get(part, 0.3)})\n"
            f"if {part == fail}: print('boom: bad {part}'); sys.exit(3)\n"
            f"open({str(record)!r}, 'a').write(f'end {part} {{time.time()}}\\n')\n"
        )
        return [sys.executable, "-c", code]

    return command


def _events(record) -> dict[tuple[str, str], float]:
    rows = [line.split() for line in record.read_text().splitlines()]
    return {(kind, part): float(t) for kind, part, t in rows}


def test_every_part_has_a_start_order_and_needs_only_known_parts():
    assert sorted(PRIORITY) == sorted(PARTS)
    assert {d for needs in NEEDS.values() for d in needs} <= set(PARTS)


def test_dependencies_are_only_the_requested_parts():
    deps = dependencies(DEFAULT_PARTS)
    assert deps["sharpen"] == {"vqgan"}
    assert deps["judge"] == deps["vqgan"] == deps["clip_a"] == set()
    assert deps["report"] == set(DEFAULT_PARTS) - {"report"}
    # Asked alone, sharpen continues the VQGAN already in the folder: nothing to wait for.
    assert dependencies(["sharpen", "report"])["sharpen"] == set()
    assert dependencies(["robust", "report"]) == {"robust": set(), "report": {"robust"}}


def test_parts_run_side_by_side_and_wait_for_what_they_need(tmp_path):
    record = tmp_path / "record.txt"
    parts = ["judge", "vqgan", "sharpen", "report"]
    seconds = {"vqgan": 1.0, "judge": 1.0}
    finished = run_parallel(
        parts,
        _logging_command(record, seconds),
        jobs=2,
        log_dir=tmp_path,
        poll_s=0.05,
        progress=False,
    )
    assert sorted(finished) == sorted(parts)
    ev = _events(record)
    # judge and vqgan overlap (two jobs); sharpen starts after vqgan, report after all.
    assert ev[("start", "judge")] < ev[("end", "vqgan")]
    assert ev[("start", "vqgan")] < ev[("end", "judge")]
    assert ev[("start", "sharpen")] >= ev[("end", "vqgan")]
    assert ev[("start", "report")] >= max(ev[("end", p)] for p in ("judge", "vqgan", "sharpen"))


def test_one_job_runs_one_part_at_a_time(tmp_path):
    record = tmp_path / "record.txt"
    run_parallel(
        ["judge", "clip_a"],
        _logging_command(record, {}),
        jobs=1,
        log_dir=tmp_path,
        poll_s=0.05,
        progress=False,
    )
    ev = _events(record)
    first, second = sorted(("judge", "clip_a"), key=lambda p: ev[("start", p)])
    assert ev[("start", second)] >= ev[("end", first)]


def test_a_failed_part_stops_the_others_and_says_why(tmp_path):
    record = tmp_path / "record.txt"
    command = _logging_command(record, {"vqgan": 30.0, "judge": 0.2}, fail="judge")
    with pytest.raises(PartFailed, match=r"'judge' failed \(exit code 3\)(.|\n)*boom: bad judge"):
        run_parallel(
            ["judge", "vqgan", "sharpen"],
            command,
            jobs=2,
            log_dir=tmp_path,
            poll_s=0.05,
            progress=False,
        )
    ev = _events(record)
    assert ("start", "vqgan") in ev and ("end", "vqgan") not in ev  # stopped, not waited for
    assert ("start", "sharpen") not in ev


def test_threads_default_shares_the_cores_among_the_parts_that_run_at_once():
    assert default_threads(2, 6, cores=2) == 1
    assert default_threads(2, 6, cores=16) == 8
    assert default_threads(2, 1, cores=2) == 2  # one part alone gets every core
    assert default_threads(4, 2, cores=8) == 4
    assert default_threads(3, 5, cores=2) == 1


def test_a_part_writes_the_file_the_toy_loader_reads_and_its_figures_beside_it(tmp_path):
    shipped_figures = {p.name: p.read_bytes() for p in FIGURES_DIR.iterdir()}
    out = tmp_path / "w"
    assert main(["--parts", "judge", "--scale", "0.002", "--jobs", "1", "--out", str(out)]) == 0
    assert isinstance(load_judge(out / JUDGE_FILE), Judge)
    record = json.loads((out / "training_judge.json").read_text())
    assert record["steps"] == 2  # 1,200 steps scaled
    assert {p.name: p.read_bytes() for p in FIGURES_DIR.iterdir()} == shipped_figures
    with pytest.raises(SystemExit):
        main(["--parts", "judge,nonsense", "--out", str(out)])
