"""Where the cutouts' time goes: the crops' resampling, the augmentations and the noise, each
forward + backward, median milliseconds of a few runs, as JSON lines; `--profile` adds torch's
operator table for the whole cutout pass.

    python benchmarks/cutouts.py                          # 256x256 image, 32 cutouts of 224 px
    python benchmarks/cutouts.py --size 128 --cutn 8 --profile

The image is a leaf that needs its gradient, as the decoder's output does in a step; the
backward pass starts from a random upstream gradient, as CLIP's would.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vqclip.generate.cutouts import CutoutConfig, MakeCutouts, resample_crops, square_spans


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs + 2):  # two warm-up runs
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:]) * 1000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="the decoded image's side")
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--cut-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    make = MakeCutouts(CutoutConfig(cut_size=args.cut_size, cutn=args.cutn))
    image = torch.rand(1, 3, args.size, args.size, requires_grad=True)
    upstream = torch.randn(args.cutn, 3, args.cut_size, args.cut_size)
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

    record = {"size": args.size, "cutn": args.cutn, "cut_size": args.cut_size,
              "threads": torch.get_num_threads()}  # fmt: skip
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
