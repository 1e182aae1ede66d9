"""Shuts down a local Ray instance whose driver died without doing so (a kill -9).

`ray.init()` with no cluster starts Ray's processes under the driver; when the driver is killed,
the raylet goes with it but its agents (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`, about 175
MB) are left running under init. vqclip starts this watcher beside a Ray instance it started:
it waits for the driver's process to end, then kills every process that names the instance's
session folder on its command line. Linux only (it reads /proc); elsewhere it is not started.

    python -m vqclip.batch.ray_reaper DRIVER_PID SESSION_DIR
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5


def session_processes(session_dir: str) -> list[int]:
    """Pids of the processes whose command line names `session_dir` (or its session name)."""
    name = Path(session_dir).name
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if name in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie is dead for our purpose
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def watch(driver: int, session_dir: str) -> None:
    while _alive(driver):
        time.sleep(POLL_S)
    time.sleep(2 * POLL_S)  # a clean ray.shutdown() finishes on its own
    for pid in session_processes(session_dir):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def start_reaper(session_dir: str) -> subprocess.Popen | None:
    """Watch this process; None where /proc is missing."""
    if not Path("/proc/self/cmdline").exists():
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "vqclip.batch.ray_reaper", str(os.getpid()), session_dir],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the driver's process group: a kill of it spares this
    )


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
