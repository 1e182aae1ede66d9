"""The `vqclip` command line. It only builds configs and consumes library objects."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from vqclip import __version__
from vqclip.errors import VQClipError, VQClipWarning, WeightsNotFoundError
from vqclip.omp import set_wait_policy

# Before torch (and its OpenMP runtime) loads: idle OpenMP threads spin on a quiet machine and
# sleep on a busy one (vqclip.omp; docs/performance.md has the figures); a setting the user
# made is kept. Processes started from here inherit it.
set_wait_policy()

OFFLINE_HINT = (
    'To try vqclip offline meanwhile: vqclip generate "a red circle on a blue background" '
    "--model toy"
)

DESCRIPTION = """Text to image with VQGAN+CLIP.

  vqclip generate "a lighthouse at dusk" -o lighthouse.png     make an image
  vqclip generate "a red circle" --model toy -o toy.png        try it offline, in seconds
  vqclip models list                                           the models, and which are cached
"""


def build_parser() -> argparse.ArgumentParser:
    from vqclip.cli import animate, batch, bench, eval, generate, models, serve

    parser = argparse.ArgumentParser(
        prog="vqclip", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"vqclip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (generate, models, bench, eval, serve, batch, animate):
        module.add_parser(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, VQClipWarning):
        print(f"vqclip: warning: {message}", file=sys.stderr)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


class _ImportGuard:
    """While the command's modules import (torch, numpy), Ctrl-C is only noted: an interrupt
    inside an import can leave a half-imported module behind (an ImportError or a recursion
    traceback), or be swallowed by torch's C code. It is acted on once the imports are done."""

    def __init__(self) -> None:
        self.interrupted = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._note)

    def _note(self, signum, frame) -> None:
        self.interrupted = True

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def release(self) -> None:
        """Ctrl-C behaves as usual again; one that came during the imports is raised now."""
        self.restore()
        if self.interrupted:
            raise KeyboardInterrupt


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    found = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def _check_joined_flags(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """argparse reads an unknown `-iter` as `-i` given the value `ter` and then complains about
    an invalid number: name the unknown flag instead."""
    known = _option_strings(parser)
    for token in argv:
        if token == "--":
            return
        if re.fullmatch(r"-[A-Za-z][A-Za-z_]+", token) and token not in known:
            raise VQClipError(
                f"unknown flag {token} (see vqclip COMMAND --help; long flags start with --)"
            )


def main(argv: Sequence[str] | None = None, *, models=None) -> int:
    """Run one command. `models` (a `vqclip.jobs.ModelCache`) hands the commands that run jobs
    already-loaded models instead of loading them by name (embedders, tests)."""
    warnings.showwarning = _show_warning
    guard = _ImportGuard()
    try:
        parser = build_parser()
        _check_joined_flags(parser, sys.argv[1:] if argv is None else list(argv))
        args = parser.parse_args(argv)
        args.models = models
        guard.release()
        return int(args.func(args) or 0)
    except VQClipError as e:
        print(f"vqclip: error: {e}", file=sys.stderr)
        if isinstance(e, WeightsNotFoundError):
            print(OFFLINE_HINT, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nvqclip: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the machine's fault, not vqclip's: a full disk, a vanished folder
        where = f": {e.filename}" if e.filename else ""
        print(f"vqclip: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    finally:
        guard.restore()
        warnings.showwarning = _default_show_warning


def console() -> None:
    """The `vqclip` command. A Ctrl-C after the command has finished must not turn into a
    traceback from an exit handler of a library, so the exit ignores it."""
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    console()
