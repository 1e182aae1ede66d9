"""Shuts down a local Ray instance whose driver died without doing so (a kill -9).

`ray.init()` with no cluster starts Ray's processes under the driver; when the driver is killed,
the raylet goes with it but its agents (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`, about 175
MB) are left running under init. vqclip starts this watcher beside a Ray instance it started:
while the driver lives it notes the driver's descendants (with their start times, so a reused
pid is never mistaken for one), and once the driver is gone it kills those still running.
Linux only (it reads /proc); elsewhere it is not started.

    python -m vqclip.batch.ray_reaper DRIVER_PID
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


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of `pid`, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], fields[19]


def descendants(pid: int) -> dict[int, str]:
    """Every living descendant of `pid`: pid -> start time."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] != "Z":
                stats[int(entry.name)] = stat
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _, start) in stats.items():
            if ppid == parent and child not in found:
                found[child] = start
                frontier.append(child)
    return found


def still_running(known: dict[int, str]) -> list[int]:
    """The pids of `known` that are still the same, living processes."""
    running = []
    for pid, start in known.items():
        stat = _stat(pid)
        if stat is not None and stat[1] != "Z" and stat[2] == start:
            running.append(pid)
    return running


def watch(driver: int) -> None:
    known: dict[int, str] = {}
    while _stat(driver) is not None and _stat(driver)[1] != "Z":
        known.update(descendants(driver))
        time.sleep(POLL_S)
    known.pop(os.getpid(), None)
    time.sleep(2 * POLL_S)  # a clean ray.shutdown() finishes on its own
    for pid in still_running(known):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def start_reaper() -> subprocess.Popen | None:
    """Watch this process; None where /proc is missing."""
    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "vqclip.batch.ray_reaper", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the driver's process group: a kill of it spares this
    )


if __name__ == "__main__":
    watch(int(sys.argv[1]))
