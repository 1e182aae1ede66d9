"""Options declared once: a frozen dataclass field carries its flags, help, group, range and
choices (`option`), and every door reads that declaration (the CLI's flags, the web API's schema
and form, batch specs, PNG metadata). This module is the machinery all such declarations share:
coercion and range checks on construction (`validate_fields`), JSON in and out (`from_mapping`,
`to_mapping`), and the references to model files a server's policy checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import typing
from collections.abc import Iterator, Mapping
from dataclasses import field
from typing import Any

from vqclip.errors import ConfigError
from vqclip.validation import is_int


def option(
    default: Any,
    *flags: str,
    help: str,
    group: str,
    choices: tuple[str, ...] | None = None,
    low: float | None = None,
    above: float | None = None,
    high: float | None = None,
    refers: str | None = None,
    **cli: Any,
) -> Any:
    """A config field with its flags, help and group. `low` and `high`: the smallest and largest
    allowed values; `above`: a bound the value must exceed; `choices`: the allowed strings;
    `refers`: "model" for a field naming model weights (a registry name or a path), "file" for
    one naming a model's config file (what a server's policy checks, `model_references`);
    `cli`: extra argparse settings (metavar, nargs, action)."""
    meta = {"flags": flags, "help": help, "group": group, "choices": choices, "low": low}
    meta.update(above=above, high=high, refers=refers, cli=cli)
    return field(default=default, metadata=meta)


def declaration(name: str, declared: type) -> Mapping[str, Any]:
    """The `option` declaration of field `name` of `declared`: flags, help, group, bounds."""
    return next(f for f in dataclasses.fields(declared) if f.name == name).metadata


def option_names(declared: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(declared))


def to_mapping(instance: Any) -> dict[str, Any]:
    """A declared dataclass as JSON values (tuples become lists), by field name."""
    return {f.name: _jsonable(getattr(instance, f.name)) for f in dataclasses.fields(instance)}


def from_mapping(declared: type, data: Any, what: str) -> Any:
    """`declared` built from a JSON object of its option names; ConfigError naming `what`
    (e.g. "settings") for anything else and listing the known names for an unknown one."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be a JSON object of option names, got {data!r}")
    names = option_names(declared)
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; known: {sorted(names)}", field=unknown[0])
    return declared(**data)


def model_references(config: Any, refers: str = "model") -> list[tuple[str, str]]:
    """(option, value) for every value of `config` that names model weights (`refers` "model")
    or a model's config file ("file"), read off the declaration's `refers`, so a server's
    policy checks an option that names a model the day it is declared."""
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("refers") != refers or value is None:
            continue
        out += [(f.name, v) for v in (value if isinstance(value, tuple) else (value,))]
    return out


def validate_fields(instance: Any) -> None:
    """Coerce every field of a frozen dataclass declared with `option` to its declared type and
    check its declared range, in place; ConfigError naming the option otherwise."""
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        value = _coerce(f.name, getattr(instance, f.name), hints[f.name])
        _check_range(f, value)
        object.__setattr__(instance, f.name, value)


@contextlib.contextmanager
def blaming(name: str) -> Iterator[None]:
    """A ConfigError from a parser that does not know which option it reads names `name`."""
    try:
        yield
    except ConfigError as e:
        if e.field is None:
            e.field = name
        raise


def fail(name: str, value: Any, why: str) -> typing.NoReturn:
    raise ConfigError(f"{name}={value!r}: {why}", field=name)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}s"
        return f"a list of {len(args)} {_describe(args[0])}s"
    if args:
        words = " or ".join(_describe(a) for a in args if a is not type(None))
        return words + (" or null" if type(None) in args else "")
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(hint, str(hint))


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """`value` as the declared type (lists become tuples, ints floats where a number is due);
    ConfigError naming the option for anything else, so bad JSON never reaches torch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if args and origin is not tuple:  # X | None, or int | str (a number or a name)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(name, value, inner[0])
        if int in inner and is_int(value):
            return value
        if str in inner and isinstance(value, str):
            return value
        fail(name, value, f"expected {_describe(hint)}")
    if origin is tuple:
        if isinstance(value, str) and args[0] is str and args[-1] is Ellipsis:
            value = (value,)
        if not isinstance(value, list | tuple):
            fail(name, value, f"expected {_describe(hint)}")
        if args[-1] is not Ellipsis and len(value) != len(args):
            fail(name, value, f"expected {_describe(hint)}")
        return tuple(_coerce(name, v, args[0]) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            fail(name, value, "expected true or false")
        return value
    if hint is int:
        if not is_int(value):
            fail(name, value, "expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(name, value, "expected a number")
        if not math.isfinite(value):
            fail(name, value, "expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            fail(name, value, "expected a string")
        return value
    raise TypeError(f"option {name}: undeclared type {hint}")


def _check_range(f: dataclasses.Field, value: Any) -> None:
    meta = f.metadata
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v is None:
            continue
        if isinstance(v, str) and meta["choices"] is None:
            continue  # a name where a number may stand (int | str): checked where it is read
        if meta["choices"] is not None and v not in meta["choices"]:
            fail(f.name, v, f"choose from {', '.join(meta['choices'])}")
        if meta["low"] is not None and v < meta["low"]:
            fail(f.name, v, f"must be at least {meta['low']}")
        if meta["above"] is not None and v <= meta["above"]:
            fail(f.name, v, f"must be greater than {meta['above']}")
        if meta["high"] is not None and v > meta["high"]:
            high = meta["high"]
            fail(f.name, v, f"must be at most {high if isinstance(high, int) else f'{high:g}'}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
