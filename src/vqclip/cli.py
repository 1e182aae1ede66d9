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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VQClipError as e:
        print(f"vqclip: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vqclip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
