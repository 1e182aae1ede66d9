"""The OpenMP wait policy chosen before torch loads (vqclip.omp): a user's setting kept, threads
that sleep where several workers share the cores or other processes keep the CPUs busy, and
libgomp's spin on a free machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vqclip.omp import available_cpus, others_cpu_use, set_wait_policy, wait_policy

BURN = "import time\nend = time.time() + 60\nwhile time.time() < end: pass\n"


def quiet() -> float:
    return 0.0


def busy() -> float:
    return float(available_cpus())


@pytest.mark.parametrize("key", ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"])
def test_a_users_setting_is_kept(key):
    environ = {key: "ACTIVE" if key == "OMP_WAIT_POLICY" else "5000"}
    assert set_wait_policy(environ, workers=4, others=busy)[0] == "user"
    assert environ == {key: environ[key]}  # nothing added


def test_several_workers_sleep_and_one_on_a_free_machine_spins():
    environ: dict[str, str] = {}
    assert set_wait_policy(environ, workers=2, others=quiet) == (
        "PASSIVE",
        "2 workers share the cores",
    )
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    environ = {}
    policy, why = set_wait_policy(environ, workers=1, others=quiet)
    assert policy == "spin" and "free" in why and environ == {}  # libgomp's default spin


def test_a_busy_or_unreadable_machine_sleeps():
    policy, why = wait_policy({}, others=busy)
    assert policy == "PASSIVE" and f"use {available_cpus():.1f} CPUs" in why
    assert wait_policy({}, others=lambda: None) == (
        "PASSIVE",
        "the machine's load cannot be read",
    )


needs_proc = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")


def burners(n: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(n)]
    time.sleep(0.5)  # running
    return procs


@needs_proc
def test_the_look_at_the_machine_sees_other_processes_work():
    procs = burners(1)
    try:
        load = others_cpu_use(0.5)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert load is not None and load >= 0.5


@needs_proc
@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_line_sleeps_beside_busy_cpus_and_keeps_a_users_setting(given, expected):
    """Spinning OpenMP threads made 2-thread runs beside another 2-thread job 2-3.5x slower."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, vqclip.cli; print(os.environ.get('OMP_WAIT_POLICY'))"
    procs = burners(available_cpus())
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert out.stdout.strip() == expected, out.stderr


def test_ray_actors_sleep_when_several_share_the_cores(monkeypatch):
    from vqclip.batch.ray_runner import actor_wait_policy

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert actor_wait_policy(2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setenv("GOMP_SPINCOUNT", "20000")
    assert actor_wait_policy(2) == {"GOMP_SPINCOUNT": "20000"}  # the user's, passed on
