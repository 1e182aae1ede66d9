"""Where a CPU step's time goes: the torch profiler's table by op for `vqclip bench`'s loop.

    ONEDNN_VERBOSE=1 python benchmarks/amx_profile.py -s 128 128 -cuts 8 --precision bf16

prints the top ops by self CPU time over `--steps` steps after a warm-up step. With
ONEDNN_VERBOSE=1 in the environment oneDNN also prints one line per primitive it runs: its
implementation (`brg_conv_fwd:avx10_1_512_amx` etc. for bf16 AMX kernels), the memory layouts
(`abcd` = NCHW, `acdb` = NHWC, blocked weights) and milliseconds; the lines after
"=== profiled steps ===" on stderr belong to the profiled steps. Summed by kind:

    awk -F, '/exec/{t[$6","$7]+=$NF} END{for (k in t) print t[k], k}' verbose.txt | sort -rn
"""

from __future__ import annotations

import argparse
import sys

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-s", "--size", type=int, nargs=2, default=[128, 128])
    parser.add_argument("-cuts", "--cutn", type=int, default=8)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--sort", default="self_cpu_time_total")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vqclip.bench import PROMPT, build_models
    from vqclip.generate import GenerateConfig, Run

    vqgan, clips = build_models(("ViT-B-32",))
    config = GenerateConfig(
        prompts=(PROMPT,),
        size=tuple(args.size),
        cutn=args.cutn,
        device="cpu",
        precision=args.precision,
        iterations=args.steps + 2,
        seed=0,
    )
    run = Run(config, vqgan=vqgan, clips=clips)
    run.step()
    print("=== profiled steps ===", file=sys.stderr, flush=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            run.step()
    print(prof.key_averages().table(sort_by=args.sort, row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
