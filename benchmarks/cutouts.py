"""Where the cutouts' time goes: the crops' resampling, the augmentations and the noise, each
forward + backward, median milliseconds of a few runs, as JSON lines; `--profile` adds torch's
operator table for the whole cutout pass.

    python benchmarks/cutouts.py                          # 256x256 image, 32 cutouts of 224 px
    python benchmarks/cutouts.py --size 128 --cutn 8 --profile
    python benchmarks/cutouts.py --dtype bfloat16         # as a bf16 run makes them

The image is a leaf that needs its gradient, as the decoder's output does in a step; the
backward pass starts from a random upstream gradient, as CLIP's would.

`--baseline SRC` compares with another version of vqclip: SRC is the `src` folder of another
checkout (e.g. `git worktree add /tmp/base HEAD~3`, then `--baseline /tmp/base/src`). Its
cutout and augmentation modules are loaded beside this checkout's, and the two whole passes
are timed interleaved in one process (the baseline in `--baseline-dtype`, fp32 by default, as
the loop made them before bf16 cutouts): on a shared or noisy machine, timings of two separate
processes differ by more than the change being measured. It prints both medians, the median
of the per-run ratios (baseline / this) and the largest pixel difference for the same draws.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from vqclip.generate.cutouts import CutoutConfig, MakeCutouts, resample_crops, square_spans


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs + 2):  # two warm-up runs
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:]) * 1000


def _load(path: Path, name: str, replace: tuple[tuple[str, str], ...] = ()) -> types.ModuleType:
    source = path.read_text(encoding="utf-8")
    for old, new in replace:
        source = source.replace(old, new)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def baseline_cutouts(src: Path) -> types.ModuleType:
    """The cutouts module of the vqclip source tree `src`, importing that tree's augments."""
    package = src / "vqclip" / "generate"
    if not (package / "cutouts.py").is_file():
        raise SystemExit(f"--baseline {src}: no vqclip/generate/cutouts.py there (want a src/)")
    _load(package / "augments.py", "_baseline_augments")
    imports = ("from vqclip.generate.augments import", "from _baseline_augments import")
    return _load(package / "cutouts.py", "_baseline_cutouts", (imports,))


def compare(args) -> dict:
    """The whole pass of the baseline and of this checkout, interleaved."""
    base_module = baseline_cutouts(Path(args.baseline))
    config = dict(cut_size=args.cut_size, cutn=args.cutn)
    makers = {
        "baseline": base_module.MakeCutouts(base_module.CutoutConfig(**config)),
        "this": MakeCutouts(CutoutConfig(**config)),
    }
    dtypes = {"baseline": getattr(torch, args.baseline_dtype), "this": getattr(torch, args.dtype)}
    image = torch.rand(1, 3, args.size, args.size)
    upstream = torch.randn(args.cutn, 3, args.cut_size, args.cut_size)
    times: dict[str, list[float]] = {name: [] for name in makers}
    for run in range(args.runs + 2):  # two warm-up rounds
        for name, make in makers.items():
            x = image.to(dtypes[name]).detach().requires_grad_(True)
            start = time.perf_counter()
            make(x, torch.Generator().manual_seed(run)).backward(upstream.to(dtypes[name]))
            times[name].append(time.perf_counter() - start)
    with torch.no_grad():
        outs = [
            make(image.to(dtypes[name]), torch.Generator().manual_seed(0)).float()
            for name, make in makers.items()
        ]
    ratios = [b / t for b, t in zip(times["baseline"][2:], times["this"][2:], strict=True)]
    return {
        "baseline": args.baseline,
        "baseline_dtype": args.baseline_dtype,
        "baseline_ms": round(statistics.median(times["baseline"][2:]) * 1000, 2),
        "this_ms": round(statistics.median(times["this"][2:]) * 1000, 2),
        "speedup": round(statistics.median(ratios), 3),
        "max_pixel_diff": float((outs[0] - outs[1]).abs().max()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="the decoded image's side")
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--cut-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32",
        help="the decoded image's dtype, which the cutouts compute in (a run's compute dtype)",
    )  # fmt: skip
    parser.add_argument("--baseline", metavar="SRC", help="another checkout's src/ to compare")
    parser.add_argument("--baseline-dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    record = {"size": args.size, "cutn": args.cutn, "cut_size": args.cut_size,
              "dtype": args.dtype, "threads": torch.get_num_threads()}  # fmt: skip
    if args.baseline:
        print(json.dumps(record | compare(args)), flush=True)
        return
    make = MakeCutouts(CutoutConfig(cut_size=args.cut_size, cutn=args.cutn))
    dtype = getattr(torch, args.dtype)
    image = torch.rand(1, 3, args.size, args.size, dtype=dtype, requires_grad=True)
    upstream = torch.randn(args.cutn, 3, args.cut_size, args.cut_size, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    boxes, hflip, _ = make.sample_boxes(1, args.size, args.size, gen)
    spans = square_spans(args.size, args.size)
    crops = resample_crops(image.detach(), boxes, args.cut_size, spans=spans)

    def whole() -> None:
        make(image, gen).backward(upstream)

    def resample() -> None:
        resample_crops(image, boxes, args.cut_size, hflip=hflip, spans=spans).backward(upstream)

    def augments() -> None:
        x = crops.clone().requires_grad_(True)
        make.augs(x, gen).backward(upstream)

    for name, fn in (("whole", whole), ("resample", resample), ("augments", augments)):
        record[f"{name}_ms"] = round(median_ms(fn, args.runs), 2)
    print(json.dumps(record), flush=True)
    if args.profile:
        with torch.profiler.profile() as prof:
            for _ in range(3):
                whole()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
