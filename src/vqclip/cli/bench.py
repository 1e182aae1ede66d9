"""`vqclip bench`: time the generation loop at the real model sizes (random weights)."""

from __future__ import annotations

import argparse
import json

from vqclip.cli.options import HelpFormatter
from vqclip.generate.config import PRECISIONS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time the generation loop at the real model sizes (random weights)",
        description="Seconds per step, peak memory, FLOPs and the split by stage of the real "
        "architectures (VQGAN ImageNet f16 16384 + CLIP presets) with random weights.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "-s", "--size", type=int, nargs=2, default=[256, 256], metavar=("W", "H"), help="image size"
    )
    p.add_argument("-cuts", "--cutn", type=int, default=32, help="cutouts per image")
    p.add_argument("-b", "--batch", type=int, default=1, help="images optimised together")
    p.add_argument(
        "--clip", nargs="+", default=["ViT-B-32"], help="CLIP presets; several = an ensemble"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="the decoder's and CLIP's compute dtype",
    )
    p.add_argument("--cuda-graphs", action="store_true", help="replay decoder and CLIP as graphs")
    p.add_argument(
        "--checkpoint-decoder", action="store_true", help="gradient checkpointing of the decoder"
    )
    p.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: torch's own choice)"
    )
    p.add_argument(
        "--peak-size", type=int, default=2048, help="side of the bf16 matrix-peak probe's products"
    )
    p.add_argument(
        "--peak-seconds", type=float, default=1.0, help="how long the matrix-peak probe runs"
    )
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    import torch

    from vqclip.atomic import atomic_write_text
    from vqclip.bench import BenchConfig, format_table, run_bench
    from vqclip.errors import ConfigError

    config = BenchConfig(
        size=tuple(args.size),
        cutn=args.cutn,
        batch=args.batch,
        clip=tuple(args.clip),
        device=args.device,
        precision=args.precision,
        cuda_graphs=args.cuda_graphs,
        checkpoint_decoder=args.checkpoint_decoder,
        steps=args.steps,
        warmup=args.warmup,
        peak_size=args.peak_size,
        peak_seconds=args.peak_seconds,
    )
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"threads={args.threads}: need at least 1")
        torch.set_num_threads(args.threads)
    result = run_bench(config)
    print(format_table([result]))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0
