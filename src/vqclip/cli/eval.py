"""`vqclip eval`: the toy benchmark (`vqclip.toy.eval`) from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from vqclip.cli.options import HelpFormatter, add_config_options, given_options
from vqclip.errors import ConfigError
from vqclip.generate.config import GenerateConfig
from vqclip.toy.eval import DEFAULT_PROMPTS, METHODS, PRECISIONS, EvalSettings

DEFAULTS = EvalSettings()
LOOP_OPTIONS = ("iterations", "cutn", "lr", "tv_weight", "seed", "precision", "threads")
# one thread unless asked: the probe's figures are per core, and eval runs beside other work
LOOP_DEFAULTS = {
    **{name: getattr(DEFAULTS, name) for name in LOOP_OPTIONS if name != "threads"},
    "threads": 1,
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="generate the toy prompts with the toy models and let the judge score them",
        description="Generate one 64x64 image per toy prompt with the normal loop, the toy "
        "VQGAN and guides, and let the judge score it: success per named attribute and "
        "overall, the guides' own verdict, and the gap between the two (docs/toy.md).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE",
        help=f"toy-world prompts, one a line (default: the {len(DEFAULT_PROMPTS)} built-in ones)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        metavar="LIST",
        help=f"comma-separated cutout methods, each run on every prompt (default: all of "
        f"{', '.join(METHODS)})",
    )
    # The loop's own flags, from GenerateConfig's declarations (checked by them), with the
    # eval's defaults
    add_config_options(parser, GenerateConfig, only=LOOP_OPTIONS, defaults=LOOP_DEFAULTS)
    parser.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="N",
        help="only every Nth prompt (--every 5 --methods overview: the 12-prompt probe)",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="only the first N prompts (after --every)"
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="write the settings and results here"
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="DIR",
        help="a folder of toy weights (default: the shipped ones)",
    )
    parser.add_argument(
        "--guides",
        metavar="LIST",
        help="comma-separated CLIP files (or registered names) to guide with instead of the "
        "toy guides; the VQGAN and the judge stay the toy ones",
    )
    parser.add_argument(
        "--images", type=Path, metavar="DIR", help="write a PNG grid of each method's images here"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:K=V;K=V",
        help="also run each method with these generate settings (JSON values, e.g. "
        "'prior:prior=\"toy_prior\";prior_weight=2' or 'plain:prior=null'); given more than "
        "once, one row each; without it each method runs once with the toy pair's defaults",
    )
    parser.set_defaults(func=run_eval_command)


def _prompts(path: Path | None, every: int, limit: int | None) -> list[str]:
    from vqclip.toy.eval import named_attributes

    prompts = list(DEFAULT_PROMPTS)
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--prompts {str(path)!r}: cannot read it ({e})")
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
        if not prompts:
            raise ConfigError(f"--prompts {str(path)!r} holds no prompt")
    for p in prompts:
        named_attributes(p)
    return prompts[::every][:limit]


def parse_variant(text: str) -> tuple[str, dict]:
    """'label:key=value;key=value' -> (label, {key: value}); values are JSON, else strings."""
    label, sep, body = text.partition(":")
    if not sep or not label.strip():
        raise ConfigError(f"--variant {text!r}: expected LABEL:key=value;key=value")
    overrides: dict = {}
    for item in filter(None, (part.strip() for part in body.split(";"))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--variant {text!r}: {item!r} is not key=value")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return label.strip(), overrides


def _check_output(flag: str, path: Path, folder: bool) -> None:
    """Fail before the run, not after it, where the output cannot be written."""
    if path.exists() and path.is_dir() != folder:
        raise ConfigError(f"{flag} {str(path)!r} is {'a file' if folder else 'a folder'}")
    into = (path, *path.parents) if folder else path.parents
    existing = next(p for p in into if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"{flag} {str(path)!r}: cannot write into {str(existing)!r}")


def _check(args: argparse.Namespace) -> tuple[list[str], list[str], list[tuple[str, dict]]]:
    """Every option checked before a model loads; returns (methods, guides, variants)."""
    rules = (
        ("--every", args.every, args.every >= 1, "at least 1"),
        ("--limit", args.limit, args.limit is None or args.limit >= 1, "at least 1"),
    )
    for flag, value, ok, rule in rules:
        if not ok:
            raise ConfigError(f"{flag} must be {rule}, got {value}")
    methods = [m for m in args.methods.split(",") if m]
    if not methods or any(m not in METHODS for m in methods):
        raise ConfigError(
            f"--methods {args.methods!r}: choose from {', '.join(METHODS)}, comma-separated"
        )
    guides = [name for name in (args.guides or "").split(",") if name]
    if args.guides is not None and not guides:
        raise ConfigError("--guides needs a CLIP file or name, e.g. --guides a.safetensors")
    variants = [parse_variant(v) for v in args.variant] or [("", {})]
    settings = _settings(args)
    for _, overrides in variants:
        for method in methods:
            settings.config(["a circle"], method, vqgan="toy", clips=["toy"], overrides=overrides)
    if args.json is not None:
        _check_output("--json", args.json, folder=False)
    if args.images is not None:
        _check_output("--images", args.images, folder=True)
    return methods, guides, variants


def _loop(args: argparse.Namespace) -> dict:
    """The loop options given, over the eval's defaults, checked by GenerateConfig's
    declarations (the same messages as `vqclip generate`'s)."""
    given = {k: v for k, v in given_options(args).items() if k in LOOP_OPTIONS}
    given = {**LOOP_DEFAULTS, **given}
    GenerateConfig(prompts=("x",), **given)
    if given["precision"] not in PRECISIONS:
        raise ConfigError(f"--precision {given['precision']}: choose from {', '.join(PRECISIONS)}")
    return given


def _settings(args: argparse.Namespace) -> EvalSettings:
    loop = _loop(args)
    return EvalSettings(**{k: v for k, v in loop.items() if k != "threads"})


def run_eval_command(args: argparse.Namespace) -> int:
    import torch

    from vqclip.atomic import atomic_write_bytes, atomic_write_text
    from vqclip.toy.eval import format_table, grid_png, run_method, table_rows
    from vqclip.toy.models import WEIGHTS_DIR, load_toy_models

    methods, guides, variants = _check(args)
    prompts = _prompts(args.prompts, args.every, args.limit)
    settings = _settings(args)
    torch.set_num_threads(_loop(args)["threads"])
    models = load_toy_models(args.weights or WEIGHTS_DIR)
    if guides:
        from vqclip.weights.resolve import load_clip_by_name

        models.clips = [load_clip_by_name(name) for name in guides]
        models.clip_paths = [Path(name) for name in guides]
    report: dict = {
        "settings": asdict(settings),
        "guides": [str(path) for path in models.clip_paths],
        "prompts": prompts,
        "variants": {label: overrides for label, overrides in variants if label},
        "methods": {},
    }
    rows: dict[str, dict[str, float]] = {}
    for label, overrides in variants:
        for method in methods:
            result = run_method(
                models, prompts, method, settings, variant=label, overrides=overrides
            )
            if result.error:
                print(
                    f"{result.method}: stopped early ({result.error}); judged its last good images",
                    file=sys.stderr,
                )
            rows.update(table_rows(result, prompts))
            report["methods"][result.method] = result.report()
            if args.images:
                name = result.method.replace("+", "_")
                atomic_write_bytes(args.images / f"{name}.png", grid_png(result.images))
            print(format_table(rows), flush=True)
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0
