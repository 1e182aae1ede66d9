"""Time the cutout augmentations alone: forward + backward, median of a few runs, as JSON lines.

    python benchmarks/augments.py                       # CPU, 32 cutouts of 224 px
    python benchmarks/augments.py --device cuda --cutn 64 --size 224

One line per augmentation list (the default chain, then each code alone), with the
milliseconds per call. On CUDA every run is synchronised, so the figure is the GPU's time
plus whatever the host had to wait for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vqclip.generate.augments import AUGMENTS, DEFAULT_AUGMENTS, build_augments


def time_augments(codes, cutn: int, size: int, device: torch.device, runs: int) -> float:
    augs = build_augments(codes, size)
    gen = torch.Generator(device=device).manual_seed(0)
    x0 = torch.rand(cutn, 3, size, size, device=device)
    times = []
    for _ in range(runs + 2):  # two warm-up runs
        x = x0.clone().requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        augs(x, gen).square().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:]) * 1000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    lists = [list(DEFAULT_AUGMENTS)] + [[code] for code in AUGMENTS]
    for codes in lists:
        ms = time_augments(codes, args.cutn, args.size, device, args.runs)
        record = {
            "augments": " ".join(codes),
            "cutn": args.cutn,
            "size": args.size,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "ms": round(ms, 2),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
