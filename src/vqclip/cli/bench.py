"""`vqclip bench`: time the generation loop at the real model sizes (random weights)."""

from __future__ import annotations

import argparse
import json

from vqclip.cli.options import HelpFormatter, add_config_options, given_options
from vqclip.generate.config import GenerateConfig


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time the generation loop at the real model sizes (random weights)",
        description="Seconds per step, peak memory, FLOPs and the split by stage of the real "
        "architectures (VQGAN ImageNet f16 16384 + CLIP presets) with random weights.",
        formatter_class=HelpFormatter,
    )
    # The run's settings are generate's own declarations: the same flags, checks, help and
    # defaults (the size too: 256x256 on a CPU, 512x512 on a GPU with 10 GB free).
    add_config_options(
        p,
        GenerateConfig,
        only=(
            "size",
            "cutn",
            "batch_size",
            "device",
            "threads",
            "precision",
            "cuda_graphs",
            "checkpoint_decoder",
        ),
    )
    g = p.add_argument_group("benchmark")
    g.add_argument(
        "--clip", nargs="+", default=["ViT-B-32"], help="CLIP presets; several = an ensemble"
    )
    g.add_argument(
        "--timed-steps",
        "--steps",
        dest="steps",
        type=int,
        default=5,
        help="timed steps, the median reported (--steps: the old name)",
    )
    g.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    g.add_argument(
        "--peak-size", type=int, default=2048, help="side of the bf16 matrix-peak probe's products"
    )
    g.add_argument(
        "--peak-seconds", type=float, default=1.0, help="how long the matrix-peak probe runs"
    )
    g.add_argument(
        "--prior",
        metavar="NAME",
        help="time the pair of this prior instead (maskgit_imagenet_256 or _512, amused_256 or "
        "_512: its VQ model, its prior settings, random weights of its size) and one redraw "
        "beside the steps",
    )
    g.add_argument("--json", help="also write the result as JSON to this file")
    p.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from vqclip.atomic import atomic_write_text
    from vqclip.bench import BenchConfig, format_table, run_bench
    from vqclip.devices import default_size, resolve_device
    from vqclip.jobs.threads import use_threads, with_threads

    # Checked by generate's own declarations before any model is built.
    checked = with_threads(GenerateConfig(prompts=("x",), **given_options(args)))
    config = BenchConfig(
        size=checked.size or default_size(resolve_device(checked.device)),
        cutn=checked.cutn,
        batch=checked.batch_size,
        clip=tuple(args.clip),
        device=checked.device,
        precision=checked.precision,
        cuda_graphs=checked.cuda_graphs,
        checkpoint_decoder=checked.checkpoint_decoder,
        steps=args.steps,
        warmup=args.warmup,
        peak_size=args.peak_size,
        peak_seconds=args.peak_seconds,
        prior=args.prior,
    )
    use_threads(checked.threads)
    # main(models=...) hands in models (tests); else random weights of the named architectures
    models = args.models.get(checked) if getattr(args, "models", None) is not None else None
    result = run_bench(config, models)
    print(format_table([result]))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0
