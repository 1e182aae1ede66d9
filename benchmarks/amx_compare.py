"""Before/after timings of the CPU step: a baseline checkout against this one, run alternately.

    python benchmarks/amx_compare.py --baseline /path/to/baseline-checkout [--threads 2]

For each round, size and precision the baseline's `vqclip bench` and this checkout's run one
after the other (A B A B ...), each in its own process with PYTHONPATH set to that checkout's
src/, so both use the same Python and torch. A bf16 matrix-product probe (2048^3, ~1 s, same
thread count) runs once per round in its own process; each figure's fraction of the machine's
bf16 peak is computed against it, for the baseline too (older checkouts do not measure it).
Prints one JSON line per run and a Markdown table of medians; `--out` keeps all runs.
Run it on a quiet machine: nothing else on its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CONFIGS = ["128:8", "256:32"]  # side:cutn, ViT-B/32 + VQGAN f16 16384
PROBE = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a, b = torch.randn(2048, 2048).bfloat16(), torch.randn(2048, 2048).bfloat16()
for _ in range(2):
    a @ b
n, start = 0, time.perf_counter()
while time.perf_counter() - start < 1.0:
    a @ b
    n += 1
print(2 * 2048**3 * n / (time.perf_counter() - start))
"""


def _env(tree: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_NUM_THREADS=str(threads))
    env.pop("ONEDNN_VERBOSE", None)
    return env


def _check_tree(tree: Path, threads: int) -> None:
    """Fail early unless `import vqclip` in the child really comes from `tree`."""
    code = "import vqclip; print(vqclip.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(tree, threads), capture_output=True, text=True
    )
    where = Path(done.stdout.strip() or "?").resolve()
    if done.returncode != 0 or not where.is_relative_to(tree.resolve()):
        sys.exit(f"{tree}: vqclip does not import from its src/ ({where}; {done.stderr[-500:]})")


def _bench(tree: Path, side: int, cutn: int, precision: str, args) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [
            sys.executable,
            "-c",
            "from vqclip.cli import console; console()",
            "bench",
            "-s",
            str(side),
            str(side),
            "-cuts",
            str(cutn),
            "--device",
            "cpu",
            "--precision",
            precision,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--json",
            str(out),
        ]
        done = subprocess.run(cmd, env=_env(tree, args.threads), capture_output=True, text=True)
        if done.returncode != 0:
            print(f"FAILED in {tree}: {' '.join(cmd[3:])}\n{done.stderr[-2000:]}", file=sys.stderr)
            return None
        return json.loads(out.read_text())


def _probe(threads: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(threads)],
        env=_env(HERE, threads),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=Path("/work/wt-base"),
        help="root of the baseline checkout (its src/ holds vqclip)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs per configuration")
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--sizes", nargs="+", default=CONFIGS, help="side:cutn pairs")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write every run as JSON here")
    args = parser.parse_args()
    trees = {"baseline": args.baseline.resolve(), "this": HERE}
    for tree in trees.values():
        _check_tree(tree, args.threads)

    runs = []
    for round_ in range(args.rounds):
        peak = _probe(args.threads)
        print(json.dumps({"round": round_, "peak_bf16_tflops": peak / 1e12}), flush=True)
        for side, cutn in (map(int, c.split(":")) for c in args.sizes):
            for precision in args.precision:
                for name, tree in trees.items():
                    r = _bench(tree, side, cutn, precision, args)
                    if r is None:
                        continue
                    row = {
                        "tree": name,
                        "path": str(tree),
                        "round": round_,
                        "side": side,
                        "cutn": cutn,
                        "precision": precision,
                        "s_per_it": r["s_per_it"],
                        "flops_per_it": r["flops_per_it"],
                        "probe_peak_tflops": peak / 1e12,
                        "peak_fraction": r["flops_per_it"] / r["s_per_it"] / peak,
                        "stage_s": r["stage_s"],
                        "threads": r["threads"],
                        "cpu": r.get("device_name"),
                        "torch": r["torch"],
                    }
                    print(json.dumps(row), flush=True)
                    runs.append(row)
    if args.out:
        args.out.write_text(json.dumps(runs, indent=2))
    print(table(runs, args.threads))
    return 0


def table(runs: list[dict], threads: int) -> str:
    """Medians over rounds: s/it and fraction of the bf16 peak, baseline against this tree."""

    def med(tree, side, cutn, precision, key):
        vals = [
            r[key]
            for r in runs
            if (r["tree"], r["side"], r["cutn"], r["precision"]) == (tree, side, cutn, precision)
        ]
        return statistics.median(vals) if vals else float("nan")

    lines = [
        f"{threads} threads; medians over rounds; % of the bf16 matrix peak (2048^3 probe)",
        "| size | cutn | precision | baseline s/it | this s/it | speed-up | baseline % peak | "
        "this % peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seen = []
    for r in runs:
        key = (r["side"], r["cutn"], r["precision"])
        if key in seen:
            continue
        seen.append(key)
        base, this = (med(t, *key, "s_per_it") for t in ("baseline", "this"))
        fb, ft = (med(t, *key, "peak_fraction") for t in ("baseline", "this"))
        lines.append(
            f"| {key[0]}x{key[0]} | {key[1]} | {key[2]} | {base:.3f} | {this:.3f} | "
            f"{base / this:.2f}x | {100 * fb:.0f}% | {100 * ft:.0f}% |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
