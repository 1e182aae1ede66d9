"""The `vqclip` command line. It only builds configs and consumes library objects."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vqclip import __version__
from vqclip.errors import VQClipError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqclip", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vqclip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from vqclip.generate.cli import add_generate_parser
    from vqclip.weights.cli import add_models_parser

    add_generate_parser(sub)
    add_models_parser(sub)
    add_bench_parser(sub)
    add_toy_parsers(sub)
    return parser


PASSTHROUGH = {("eval",): "vqclip.toy.eval", ("toy", "train"): "vqclip.toy.train"}


def add_toy_parsers(sub) -> None:
    """Listed for --help; `main` hands their arguments to the toy modules' own parsers."""
    toy = sub.add_parser("toy", help="the toy world: a model pair trained here, offline")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True, metavar="COMMAND")
    toy_sub.add_parser("train", help="train the toy judge, VQGAN and guides (see its --help)")
    sub.add_parser("eval", help="judge generated images on the toy prompts (see its --help)")


def add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time the generation loop at the real model sizes (random weights)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-s", "--size", type=int, nargs=2, default=[256, 256], metavar=("W", "H"))
    p.add_argument("-cuts", "--cutn", type=int, default=32)
    p.add_argument("-b", "--batch", type=int, default=1)
    p.add_argument(
        "--clip", nargs="+", default=["ViT-B-32"], help="CLIP presets; several = ensemble"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--cuda-graphs", action="store_true", help="replay decoder and CLIP as graphs")
    p.add_argument(
        "--checkpoint-decoder", action="store_true", help="gradient checkpointing of the decoder"
    )
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    import json

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    for prefix, module in PASSTHROUGH.items():
        if tuple(argv[: len(prefix)]) == prefix:
            import importlib

            run = importlib.import_module(module).main
            rest = argv[len(prefix) :]
            break
    else:
        args = parser.parse_args(argv)
        run, rest = args.func, args
    try:
        return int(run(rest) or 0)
    except VQClipError as e:
        print(f"vqclip: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vqclip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
