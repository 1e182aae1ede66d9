"""Command-line flags built from the option declarations of `GenerateConfig` (one home each)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any

from vqclip.generate.config import GenerateConfig


class HelpFormatter(argparse.HelpFormatter):
    """Wider help columns, so the option tables stay readable; another tool's spellings of a
    flag (`aliases` of `add_config_options`) are accepted but not listed."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = getattr(action, "hidden_flags", ())
        if hidden:
            action = copy.copy(action)
            action.option_strings = [s for s in action.option_strings if s not in hidden]
        return super()._format_action_invocation(action)


def add_config_options(
    parser: argparse.ArgumentParser,
    declared: type = GenerateConfig,
    only: tuple[str, ...] | None = None,
    aliases: Mapping[str, tuple[str, ...]] | None = None,
    value_aliases: Mapping[str, Mapping[str, str | None]] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, argparse._ArgumentGroup]:
    """One flag per field of `declared` (`GenerateConfig` or another dataclass of `option`s;
    `only` these fields when given), in its declared group. Flags that are not given stay out
    of the parsed namespace (`given_options` reads only those), so stored settings and a model
    pair's defaults are overridden only by what the user typed.

    Choices are matched without regard to case (`-opt Adam`). `aliases` (field -> other flags)
    and `value_aliases` (field -> {another tool's choice: ours}) accept another tool's
    spellings; the values pass through as given, for the caller to translate and say so.
    `defaults` (field -> value) are the defaults a command other than `generate` uses where a
    flag is not given (e.g. eval's 100 steps); its --help shows those."""
    hints = typing.get_type_hints(declared)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(declared):
        if only is not None and f.name not in only:
            continue
        meta = f.metadata
        group = groups.get(meta["group"]) or _group(parser, meta["group"])
        groups[meta["group"]] = group
        extra_flags = (aliases or {}).get(f.name, ())
        extra_values = tuple((value_aliases or {}).get(f.name, ()))
        shown = (defaults or {}).get(f.name, f.default)
        settings = _argparse_settings(f, hints[f.name], extra_values, shown)
        action = group.add_argument(*meta["flags"], *extra_flags, **settings)
        action.hidden_flags = extra_flags
    return groups


def _group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The parser's group of this title, made if it has none: options of two declarations in
    one group (animate's --video and --checkpoint-every) are listed under one heading."""
    for group in parser._action_groups:
        if group.title == title:
            return group  # type: ignore[return-value]
    return parser.add_argument_group(title)


def given_options(args: argparse.Namespace, declared: type = GenerateConfig) -> dict[str, Any]:
    """The options of `declared` given on the command line, by field name, as it takes them."""
    names = {f.name for f in dataclasses.fields(declared)}
    return {k: v for k, v in vars(args).items() if k in names}


def _argparse_settings(
    f: dataclasses.Field, hint: Any, extra_values: tuple[str, ...] = (), default: Any = None
) -> dict[str, Any]:
    meta = f.metadata
    help_text = meta["help"].replace("%", "%%")
    if default is True:  # an option that is on unless --no-... is given
        help_text += " (default: on)"
    elif default not in (None, ()) and not isinstance(default, bool):
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        help_text += f" (default: {shown})"
    settings: dict[str, Any] = {
        "dest": f.name,
        "default": argparse.SUPPRESS,
        "help": help_text,
        **meta["cli"],
    }
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    inner = args[0] if args and typing.get_origin(hint) is not tuple else hint
    if inner is bool:
        settings["action"] = argparse.BooleanOptionalAction
        return settings
    if typing.get_origin(inner) is tuple:
        element = typing.get_args(inner)[0]
        if settings.get("action") != "append":
            is_list = typing.get_args(inner)[-1] is Ellipsis
            settings.setdefault("nargs", "+" if is_list else len(typing.get_args(inner)))
        inner = element
    settings["type"] = inner
    if meta["choices"] is not None:
        settings["type"] = _choice(meta["choices"], extra_values)
        settings.setdefault("metavar", "{" + ",".join(meta["choices"]) + "}")
    return settings


def _choice(choices: tuple[str, ...], extra: tuple[str, ...]) -> Callable[[str], str]:
    """The argparse type of a choice: the declared spelling of `value` whatever its case, or
    one of `extra` (another tool's names) as given, lower-cased."""
    known = {c.lower(): c for c in choices} | {e.lower(): e.lower() for e in extra}

    def choice(value: str) -> str:
        if value.lower() not in known:
            raise argparse.ArgumentTypeError(
                f"invalid choice {value!r} (choose from {', '.join(choices)})"
            )
        return known[value.lower()]

    return choice
