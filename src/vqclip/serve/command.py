"""A job's settings as the `vqclip generate` command line that makes the same image.

Only what differs from the model pair's settings is written, with each option's long flag from
its one declaration; the words are shell-quoted, so the line pastes into a POSIX shell as is.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from vqclip.generate.config import DEFAULT_MODEL, GenerateConfig
from vqclip.weights.registry import resolve_pair

# Not the run's: the server chose the device, and the CLI picks its own.
_SKIPPED = ("device",)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _base(model: str | None) -> dict[str, Any]:
    pair = resolve_pair(model or DEFAULT_MODEL)
    values = {f.name: f.default for f in dataclasses.fields(GenerateConfig)}
    values.update(vqgan=pair.vqgan, clip=pair.clips, vqgan_config=None, **dict(pair.defaults))
    return {k: _plain(v) for k, v in values.items()}


def generate_command(settings: dict[str, Any], model: str | None) -> str:
    """`vqclip generate --model M --prompts ... --seed N ...` for a job's `settings`."""
    base = _base(model)
    words = ["vqclip", "generate"] + (["--model", model] if model else [])
    for f in dataclasses.fields(GenerateConfig):
        value = _plain(settings.get(f.name))
        if f.name == "prior" and value is None and base["prior"] is not None:
            words += ["--prior", "none"]  # the pair's prior turned off
            continue
        if f.name in _SKIPPED or value is None or value == base[f.name]:
            continue
        flag = next(x for x in f.metadata["flags"] if x.startswith("--"))
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list):
            if not value:  # an empty list has no flag form (nargs="+")
                continue
            if f.metadata["cli"].get("action") == "append":
                for item in value:
                    words += [flag, str(item)]
            else:
                words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)
