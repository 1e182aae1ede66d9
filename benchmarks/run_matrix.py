"""Run the benchmark matrix of docs/performance.md, one subprocess per configuration (so each
peak-memory figure is that configuration's own), and print JSON lines plus a Markdown table.

    python benchmarks/run_matrix.py --device cpu --out results.json
    python benchmarks/run_matrix.py --device cuda --set gpu
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SETS = {
    # (W, H, cutn, batch, clip presets)
    "cpu": [
        (128, 128, 8, 1, ["ViT-B-32"]),
        (256, 256, 32, 1, ["ViT-B-32"]),
    ],
    "gpu": [
        (128, 128, 8, 1, ["ViT-B-32"]),
        (256, 256, 32, 1, ["ViT-B-32"]),
        (512, 512, 64, 1, ["ViT-B-32"]),
        (256, 256, 32, 4, ["ViT-B-32"]),
        (512, 512, 64, 1, ["ViT-L-14"]),
        (512, 512, 64, 1, ["ViT-B-32", "ViT-B-16"]),
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", choices=SETS, default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", nargs="+", default=["auto"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", help="write all results to this JSON file")
    args = parser.parse_args()

    from vqclip.bench import format_table

    results = []
    for w, h, cutn, batch, clips in SETS[args.set]:
        for precision in args.precision:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "r.json"
                cmd = [
                    sys.executable,
                    "-c",
                    "from vqclip.cli import console; console()",
                    "bench",
                    "-s",
                    str(w),
                    str(h),
                    "-cuts",
                    str(cutn),
                    "-b",
                    str(batch),
                    "--clip",
                    *clips,
                    "--device",
                    args.device,
                    "--precision",
                    precision,
                    "--steps",
                    str(args.steps),
                    "--json",
                    str(out),
                ]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"FAILED {cmd}: {done.stderr[-2000:]}", file=sys.stderr)
                    continue
                result = json.loads(out.read_text())
            print(json.dumps(result), flush=True)
            results.append(result)
    print(format_table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
