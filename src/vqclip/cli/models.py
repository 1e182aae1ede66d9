"""`vqclip models ...`: list, download, convert and locate pretrained weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vqclip.weights.cache import (
    cached_paths,
    converted_paths,
    is_cached,
    is_converted,
    model_dir,
)
from vqclip.weights.download import ensure_files, source_urls
from vqclip.weights.registry import KINDS, WeightSpec, get_spec, list_specs
from vqclip.weights.resolve import convert


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the `models` command group to the top-level `vqclip` parser."""
    models = subparsers.add_parser(
        "models", help="list, download and convert pretrained weights", description=__doc__
    )
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    p = actions.add_parser("list", help="show the known models and whether they are cached")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--kind", choices=KINDS, help="only this kind of model")
    p.set_defaults(func=_list)

    p = actions.add_parser("download", help="fetch a model's files into the cache")
    p.add_argument("names", nargs="+", metavar="NAME", help="registry name or alias")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_download)

    p = actions.add_parser(
        "convert",
        help="write a checkpoint as safetensors + JSON (fast and safe to load)",
        description="Load a model from a registry name or a checkpoint file and write it as "
        "safetensors + JSON. For a registry name the default output is the cache copy that "
        "later loads use.",
    )
    p.add_argument("name_or_path", metavar="NAME_OR_PATH")
    p.add_argument("--config", metavar="YAML", help="taming YAML of a .ckpt file")
    p.add_argument("--out", metavar="PATH.safetensors", help="where to write the weights")
    p.add_argument(
        "--quick-gelu",
        action=argparse.BooleanOptionalAction,
        help="for a CLIP file: OpenAI weights use QuickGELU (default), LAION's do not",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_convert)

    p = actions.add_parser("path", help="print where a model's files are or should be put")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_path)


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n / scale:.0f} {unit}"
    return f"{n} B"


def _cache_state(spec: WeightSpec) -> str:
    cached, converted = is_cached(spec), is_converted(spec)
    if cached and converted:
        return "yes+converted"
    return "yes" if cached else "converted" if converted else "no"


def _spec_json(spec: WeightSpec) -> dict:
    paths = cached_paths(spec)
    files = [
        {
            "role": f.role,
            "filename": f.filename,
            "path": str(paths[f.role]),
            "urls": source_urls(f),
            "sha256": f.sha256,
            "sha256_note": f.sha256_note,
            "size_bytes": f.size_bytes,
        }
        for f in spec.files
    ]
    info = {
        "name": spec.name,
        "kind": spec.kind,
        "aliases": list(spec.aliases),
        "description": spec.description,
        "licence": spec.licence,
        "size_bytes": spec.size_bytes,
        "cached": is_cached(spec),
        "converted": is_converted(spec),
        "dir": str(model_dir(spec)),
        "files": files,
    }
    if spec.kind == "clip":
        info.update(
            preset=spec.preset,
            quick_gelu=spec.quick_gelu,
            input_size=spec.input_size,
            mean=list(spec.mean),
            std=list(spec.std),
        )
    return info


def _list(args: argparse.Namespace) -> int:
    specs = list_specs(args.kind)
    if args.json:
        print(json.dumps([_spec_json(s) for s in specs], indent=2))
        return 0
    header = ("NAME", "KIND", "SIZE", "CACHED", "LICENCE")
    rows = [(s.name, s.kind, _human_size(s.size_bytes), _cache_state(s), s.licence) for s in specs]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _download(args: argparse.Namespace) -> int:
    specs = [get_spec(name) for name in args.names]  # all names checked before any download
    for spec in specs:
        was_cached = is_cached(spec) and not args.force
        ensure_files(spec, progress=not args.no_progress, force=args.force)
        state = "already cached, checked" if was_cached else "downloaded"
        print(f"{spec.name}: {state} in {model_dir(spec)}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    out = convert(
        args.name_or_path,
        config=args.config,
        out=args.out,
        quick_gelu=args.quick_gelu,
        progress=not args.no_progress,
    )
    print(f"wrote {out}")
    config = out.with_suffix(".json")
    if config.is_file():
        print(f"wrote {config}")
    return 0


def _path(args: argparse.Namespace) -> int:
    spec = get_spec(args.name)
    print(model_dir(spec))
    paths = cached_paths(spec)
    width = max(len(r) for r in (*paths, "converted"))
    for f in spec.files:
        path: Path = paths[f.role]
        state = "present" if path.is_file() else f"missing, from {source_urls(f)[0]}"
        print(f"  {f.role.ljust(width)}  {path}  ({state})")
    weights, _ = converted_paths(spec)
    state = "present" if is_converted(spec) else f"missing, vqclip models convert {spec.name}"
    print(f"  {'converted'.ljust(width)}  {weights}  ({state})")
    return 0
