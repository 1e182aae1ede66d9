"""Batch throughput with the toy pair: images/hour optimised one at a time vs N together as one
batch of latents (`vqclip batch --group N`), and items/hour on a local Ray instance with 1 vs 2
actors. Prints JSON.

    python benchmarks/batch_throughput.py [--items 8] [--iterations 30] [--groups 1 8]
        [--ray-workers 1 2] [--ray-items 8] [--no-ray] [--device cpu] [--threads N]

Every figure is a whole `vqclip batch` run into a fresh folder, model loading (and Ray actor
start-up) included, so short batches understate the steady rate; `--repeat` keeps the fastest.
Ray actors get one CPU each, so torch runs one thread in each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "star")


def write_specs(folder: Path, items: int, iterations: int, cutn: int, device: str) -> str:
    lines = []
    for i in range(items):
        prompt = f"a {COLOURS[i % 4]} {SHAPES[i // 4 % 4]} on a {COLOURS[(i + 1) % 4]} background"
        spec = {"prompt": prompt, "model": "toy", "iterations": iterations, "cutn": cutn}
        lines.append(json.dumps({**spec, "device": device}))
    path = folder / "specs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def local_rate(specs: str, group: int, repeat: int) -> dict:
    from vqclip.batch.runner import prepare_batch, run_local

    best = None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            summary = run_local(prepare_batch(specs, out, group=group))
            seconds = time.perf_counter() - started
            assert summary.failed == 0, "an item failed"
            best = seconds if best is None else min(best, seconds)
    items = summary.done
    return {
        "group": group,
        "items": items,
        "seconds": round(best, 2),
        "images_per_hour": round(items * 3600 / best),
    }


def ray_rate(specs: str, workers: int, repeat: int) -> dict:
    from vqclip.batch.ray_runner import run_ray
    from vqclip.batch.runner import prepare_batch

    best = None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            summary = run_ray(prepare_batch(specs, out, group=1), workers=workers)
            seconds = time.perf_counter() - started
            assert summary.failed == 0, "an item failed"
            best = seconds if best is None else min(best, seconds)
    items = summary.done
    return {
        "workers": workers,
        "items": items,
        "seconds": round(best, 2),
        "items_per_hour": round(items * 3600 / best),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--cutn", type=int, default=16)
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--ray-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ray-items", type=int, default=8)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of the local runs (0: torch's default). On a CPU shared with other "
        "work, 1 avoids threads spinning while they wait for a core, which can cost 10x",
    )
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg()[0],
            "device": args.device,
        },
        "model": "toy (64x64)",
        "iterations": args.iterations,
        "cutn": args.cutn,
    }
    with tempfile.TemporaryDirectory() as folder:
        specs = write_specs(Path(folder), args.items, args.iterations, args.cutn, args.device)
        report["local"] = [local_rate(specs, g, args.repeat) for g in args.groups]
        if not args.no_ray:
            import ray

            ray_specs = Path(folder) / "ray"
            ray_specs.mkdir()
            specs = write_specs(ray_specs, args.ray_items, args.iterations, args.cutn, "cpu")
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=max(args.ray_workers), include_dashboard=False, log_to_driver=False)
            try:
                report["ray"] = [ray_rate(specs, w, args.repeat) for w in args.ray_workers]
            finally:
                ray.shutdown()
    report["machine"]["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
