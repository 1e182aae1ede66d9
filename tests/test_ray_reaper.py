"""A local Ray instance started by `vqclip batch --ray` does not outlive a kill -9 of its driver."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vqclip.batch.ray_reaper import descendants, still_running

pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux's /proc")
def test_a_killed_driver_leaves_no_ray_processes(tmp_path):
    specs = tmp_path / "s.jsonl"
    lines = [{"prompt": f"a red circle {i}", "model": "toy", "iterations": 200} for i in range(2)]
    specs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ray_tmp = Path(tempfile.mkdtemp(prefix="vqr", dir="/tmp"))  # short: Ray's socket paths
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(ray_tmp)}
    argv = ["batch", str(specs), "--out", "out", "--ray", "--no-progress", "--workers", "1"]
    driver = subprocess.Popen(
        [sys.executable, "-c", "from vqclip.cli import console; console()", *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "driver.log", "w"),  # noqa: SIM115 (the child holds it)
    )
    deadline = time.monotonic() + 180
    session = None
    while time.monotonic() < deadline and driver.poll() is None:
        sessions = sorted(ray_tmp.rglob("session_2*"))
        if sessions and list((tmp_path / "out").rglob("run/state.bin")):
            session = str(sessions[-1])
            break
        time.sleep(0.5)
    log = (tmp_path / "driver.log").read_text()
    assert session is not None, f"the batch never got going on Ray:\n{log}"
    ray_processes = descendants(driver.pid)  # raylet, gcs, agents, actors (and the reaper)
    assert len(ray_processes) >= 3, ray_processes
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and still_running(ray_processes):
        time.sleep(0.5)
    assert still_running(ray_processes) == []
