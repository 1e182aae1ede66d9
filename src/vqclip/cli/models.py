"""`vqclip models ...`: list, check, download, convert and locate pretrained weights."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from vqclip.weights.cache import (
    cached_paths,
    converted_paths,
    is_cached,
    is_converted,
    model_dir,
    own_path,
)
from vqclip.weights.download import ensure_files, host_url, offline_reason, source_urls
from vqclip.weights.fetch import part_source
from vqclip.weights.registry import (
    KINDS,
    PACKAGED,
    PACKAGED_DIR,
    PAIRS,
    WeightSpec,
    get_spec,
    list_specs,
    specs_named,
)
from vqclip.weights.resolve import convert


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the `models` command group to the top-level `vqclip` parser."""
    models = subparsers.add_parser(
        "models", help="list, download and convert pretrained weights", description=__doc__
    )
    actions = models.add_subparsers(dest="models_command", metavar="ACTION")
    models.set_defaults(func=_list, json=False, kind=None)  # `vqclip models` alone lists

    p = actions.add_parser(
        "list", help="the known models: cached or not, hosts in the order tried, hash pinned"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--kind", choices=KINDS, help="only this kind of model")
    p.set_defaults(func=_list)

    p = actions.add_parser(
        "check",
        help="ask each host whether it still serves the files (HEAD, short timeout)",
        description="Ask every host of the named models (default: all) whether it answers, "
        "without downloading. Exit status 1 when some file has no host that answers.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="registry names (default: all)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per host (5)")
    p.set_defaults(func=_check)

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
    if cached or converted:
        return "yes" if cached else "converted"
    # an interrupted download, which the next one continues
    partial = any(part_source(own_path(spec, f)) for f in spec.files)
    return "partial" if partial else "no"


def _hash_state(spec: WeightSpec) -> str:
    pinned = [f.sha256 is not None for f in spec.files]
    return "pinned" if all(pinned) else "partly" if any(pinned) else "first use"


def _host_lines(spec: WeightSpec) -> list[str]:
    """The hosts in the order tried: one line for the model, or one per file where they differ."""
    orders = {f.role: [h.label for h in f.sources] for f in spec.files}
    numbered = {
        role: "  ".join(f"{i}. {x}" for i, x in enumerate(o, 1)) for role, o in orders.items()
    }
    if len(set(numbered.values())) == 1:
        return [f"hosts: {next(iter(numbered.values()))}"]
    return [f"hosts of the {role}: {line}" for role, line in numbered.items()]


def _spec_json(spec: WeightSpec) -> dict:
    paths = cached_paths(spec)
    files = [
        {
            "role": f.role,
            "filename": f.filename,
            "path": str(paths[f.role]),
            "urls": source_urls(f),
            "hosts": [
                {
                    "label": h.label,
                    "url": host_url(h),
                    "hub_repo": h.hf_repo,
                    "revision": h.revision if h.is_hub else None,
                    "commit_pinned": h.pinned_commit,
                    "referer": h.referer,
                    "note": h.note,
                }
                for h in f.sources
            ],
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
        "hash": _hash_state(spec),
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


_HASH_LEGEND = (
    "HASH: pinned = each file is checked against a sha256 that two independent sources "
    "publish; first use = no such hash, so the first download's sha256 is recorded and "
    "later loads are checked against it (trust on first use). Hosts are tried in the order "
    "shown; hf:REPO@REV is a Hugging Face Hub repository at a commit (or at main, unpinned)."
)


def _list(args: argparse.Namespace) -> int:
    specs = list_specs(args.kind)
    if args.json:
        print(json.dumps([_spec_json(s) for s in specs], indent=2))
        return 0
    header = ("NAME", "KIND", "SIZE", "CACHED", "HASH", "LICENCE")
    rows = [
        (s.name, s.kind, _human_size(s.size_bytes), _cache_state(s), _hash_state(s), s.licence)
        for s in specs
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    for spec, row in zip((None, *specs), (header, *rows), strict=True):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
        if spec is not None:
            for line in _host_lines(spec):
                print(f"    {line}")
    if args.kind is None:
        print()
        print("IN THE PACKAGE (no download): " + ", ".join(sorted(PACKAGED)))
        print()
        print("PAIRS (--model NAME: a VQGAN, its CLIPs and their default settings):")
        for name, pair in PAIRS.items():
            print(f"  {name.ljust(max(map(len, PAIRS)))}  {pair.vqgan} + {' + '.join(pair.clips)}")
    print()
    print(textwrap.fill(_HASH_LEGEND, width=100))
    return 0


def _check(args: argparse.Namespace) -> int:
    from vqclip.weights.probe import check_specs

    packaged = [n for n in args.names if n in PACKAGED]
    for name in packaged:
        print(f"{name}: in the package ({PACKAGED_DIR / PACKAGED[name]}), no host to check")
    names = [n for n in args.names if n not in PACKAGED]
    if packaged and not names:
        return 0
    specs = [get_spec(n) for n in names] if names else list_specs()
    offline = offline_reason()
    if offline:
        print(f"offline ({offline}): no host was asked. Unset it to check the hosts.")
        return 0
    answers = check_specs(specs, timeout=args.timeout)
    header = ("MODEL", "FILE", "HOST", "ANSWER")
    rows = [
        (a.spec, a.role, a.host.label, ("ok: " if a.ok else "NO: ") + a.detail) for a in answers
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    if answers and not any(a.reached for a in answers):
        print("no host could be reached: this machine seems to have no network access.")
        return 1
    stranded = sorted(
        {(a.spec, a.role) for a in answers} - {(a.spec, a.role) for a in answers if a.ok}
    )
    for name, role in stranded:
        print(f"{name}: no host serves its {role} file now.")
    return 1 if stranded else 0


def _download(args: argparse.Namespace) -> int:
    # all names checked before any download; a pair's name stands for its models
    for name in (n for n in args.names if n in PACKAGED):
        print(f"{name}: in the package ({PACKAGED_DIR / PACKAGED[name]}), nothing to download")
    names = [n for n in args.names if n not in PACKAGED]
    specs = list(dict.fromkeys(s for name in names for s in specs_named(name)))
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
    if args.name in PACKAGED:  # the toy models: files inside the installed package
        print(PACKAGED_DIR / PACKAGED[args.name])
        return 0
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
