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
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from vqclip.atomic import atomic_write_text
    from vqclip.bench import BenchConfig, format_table, run_bench

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
    )
    result = run_bench(config)
    print(format_table([result]))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0
