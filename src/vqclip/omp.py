"""How idle OpenMP threads wait, chosen before torch loads (it imports nothing heavy).

torch's CPU builds on Linux run their parallel work on GNU OpenMP (libgomp), which reads its
wait policy once, when it loads. Between two parallel regions an idle thread either spins
(libgomp's default: 300,000 rounds, then it sleeps) or sleeps at once (OMP_WAIT_POLICY=PASSIVE).
Measured with `benchmarks/wait_policy.py` (docs/performance.md): on a quiet 2-core machine
sleeping costs 22-34% a step against spinning; beside another 2-thread job, spinning costs 2-3.5x
against sleeping, which then runs as fast as one thread. No spin count is good at both (a
bounded spin of 10,000 rounds is as slow as the default on a busy machine), so the choice is
made from what the machine shows when the process starts:

- a setting the user made (OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment) is kept;
- processes that vqclip starts several of to share the cores (`workers` > 1: serve's workers,
  Ray actors) sleep;
- otherwise the CPUs' use by others over a short look (`LOOK_SECONDS` of /proc/stat) decides:
  when fewer CPUs are free than the job's default threads need, threads sleep; when they are
  free, they spin (libgomp's default).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path

USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
LOOK_SECONDS = 0.1
# a thread counts as crowded out when less than this share of a CPU is left for it
FREE_MARGIN = 0.5


def physical_cores() -> int:
    """Cores this process may run on, counting hyperthread siblings once (Linux's topology
    files; elsewhere the logical CPU count)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def available_cpus() -> int:
    """Logical CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; None where it is absent."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def others_cpu_use(seconds: float = LOOK_SECONDS) -> float | None:
    """CPUs' worth of work the machine did over `seconds` while this process slept: the other
    processes' load (None where /proc/stat cannot be read)."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(seconds)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    cpus = os.cpu_count() or 1  # /proc/stat counts every CPU of the machine
    return cpus * (after[0] - before[0]) / (after[1] - before[1])


def wait_policy(
    environ: MutableMapping[str, str],
    *,
    workers: int = 1,
    others: Callable[[], float | None] = others_cpu_use,
) -> tuple[str, str]:
    """The wait policy for a process about to load torch, and why: ("user", setting) when the
    environment names one, ("PASSIVE", reason) for threads that sleep, ("spin", reason) for
    libgomp's bounded spin. `others` measures the other processes' load (CPUs)."""
    for key in USER_SETTINGS:
        if key in environ:
            return "user", f"{key}={environ[key]} as given"
    if workers > 1:
        return "PASSIVE", f"{workers} workers share the cores"
    load = others()
    if load is None:
        return "PASSIVE", "the machine's load cannot be read"
    free = available_cpus() - load
    needed = physical_cores() - FREE_MARGIN  # the default thread count, one per core
    if free < needed:
        return "PASSIVE", f"other processes use {load:.1f} CPUs; {free:.1f} free"
    return "spin", f"the CPUs are free (others use {load:.1f})"


def set_wait_policy(
    environ: MutableMapping[str, str] | None = None,
    *,
    workers: int = 1,
    others: Callable[[], float | None] = others_cpu_use,
) -> tuple[str, str]:
    """Write the chosen policy into `environ` (os.environ by default) for torch, or for the
    processes about to be started with it: PASSIVE is written as OMP_WAIT_POLICY, a spin
    leaves libgomp's default (nothing written), a user's setting is kept."""
    environ = os.environ if environ is None else environ
    choice = wait_policy(environ, workers=workers, others=others)
    if choice[0] == "PASSIVE":
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return choice
