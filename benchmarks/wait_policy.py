"""Seconds per step of `vqclip bench` under OpenMP wait policies, on a quiet machine and beside
another 2-thread job, each configuration in its own process, alternating over repetitions.

    python benchmarks/wait_policy.py                       # quiet, 128/8 and 256/32
    python benchmarks/wait_policy.py --busy                # beside a second vqclip bench
    python benchmarks/wait_policy.py --policies passive spin10k default --reps 3

torch's CPU wheels on Linux use GNU OpenMP (libgomp), which reads its settings once, when it
loads: OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once), ACTIVE (they spin forever), unset
(they spin GOMP_SPINCOUNT=300000 rounds, then sleep; 1000 when there are more threads than CPUs),
or GOMP_SPINCOUNT=N with the policy unset (a bounded spin). vqclip's command line sets its
default before torch loads (src/vqclip/cli/__init__.py); an empty OMP_WAIT_POLICY here keeps
the command line from setting one, so libgomp's own default is measured.

`--busy` starts a second `vqclip bench` (128/8, 2 threads, the same policy, or `--beside`'s)
15 s before each timed run and stops it after, so both processes spin or sleep by the same
rule, as two vqclip jobs on one machine would. With the policy "cli" the second bench starts on
a quiet machine and chooses for itself: the first of two jobs spins, the second sees it.
Figures are medians over the repetitions of each run's median step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> environment (threads: the bench's --threads)
POLICIES: dict[str, dict[str, str]] = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "default": {"OMP_WAIT_POLICY": ""},
    "spin1k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "1000"},
    "spin10k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"},
    "spin30k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "30000"},
    "spin100k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "100000"},
    "cli": {},  # whatever the command line sets by itself
}
SIZES = {"128/8": (128, 8), "256/32": (256, 32)}


def bench_command(size: int, cutn: int, threads: int, steps: int, out: Path | None) -> list[str]:
    cmd = [
        sys.executable, "-c", "from vqclip.cli import console; console()", "bench",
        "-s", str(size), str(size), "-cuts", str(cutn), "--threads", str(threads),
        "--timed-steps", str(steps), "--warmup", "2", "--peak-seconds", "0.2",
    ]  # fmt: skip
    if out is not None:
        cmd += ["--json", str(out)]
    return cmd


def environment(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(POLICIES[policy])
    return env


def timed(
    policy: str, size: int, cutn: int, threads: int, steps: int, busy: bool, beside: str | None
) -> float:
    background = None
    if busy:
        background = subprocess.Popen(
            bench_command(128, 8, 2, 100_000, None),
            env=environment(beside or policy),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(15)  # its models built, its steps running
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            done = subprocess.run(
                bench_command(size, cutn, threads, steps, out),
                env=environment(policy),
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{policy} {size}/{cutn}: {done.stderr[-2000:]}")
            return float(json.loads(out.read_text())["s_per_it"])
    finally:
        if background is not None:
            background.kill()
            background.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--one-thread", action="store_true", help="also time PASSIVE with 1 thread (busy's mark)"
    )
    parser.add_argument("--busy", action="store_true", help="beside a second 2-thread bench")
    parser.add_argument(
        "--beside",
        choices=POLICIES,
        help="the second bench's policy (default: the same as the timed run's)",
    )
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    args = parser.parse_args()

    runs = [(p, args.threads) for p in args.policies]
    if args.one_thread:
        runs.append(("passive", 1))
    figures: dict[tuple[str, str, int], list[float]] = {}
    for rep in range(args.reps):
        for size_name in args.sizes:
            size, cutn = SIZES[size_name]
            for policy, threads in runs:
                s = timed(policy, size, cutn, threads, args.steps, args.busy, args.beside)
                figures.setdefault((size_name, policy, threads), []).append(s)
                print(
                    json.dumps(
                        {"rep": rep, "size": size_name, "policy": policy, "threads": threads,
                         "busy": args.busy, "seconds_per_step": round(s, 4)}
                    ),
                    flush=True,
                )  # fmt: skip
    print(
        f"\n| size/cutn | policy | threads | s/it ({'busy' if args.busy else 'quiet'}) | vs best |"
    )
    print("|---|---|---|---|---|")
    for size_name in args.sizes:
        rows = {k: statistics.median(v) for k, v in figures.items() if k[0] == size_name}
        best = min(rows.values())
        for (_, policy, threads), s in rows.items():
            print(f"| {size_name} | {policy} | {threads} | {s:.3f} | {s / best:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
