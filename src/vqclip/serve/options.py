"""The generate options as the web service shows and checks them, read off `GenerateConfig`.

Nothing about an option is written here: its type, range, choices, help and group come from the
config's one declaration, so the page's form, the OpenAPI schema of `POST /api/jobs` and the
validation (`build_config`) always agree with the CLI. What is the server's own is the policy:
which model names a request may give, and that images come from uploads, never server paths.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqclip.declare import model_references
from vqclip.errors import ConfigError
from vqclip.generate.config import GenerateConfig, build_config


def _json_type(hint: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if args and origin is not tuple:  # X | None, or int | str | None (a number or a name)
        # a name first: the page's form shows the first branch, and a text box takes both
        kinds = sorted((a for a in args if a is not type(None)), key=lambda a: a is not str)
        inner = [_json_type(a) for a in kinds]
        return {"anyOf": inner + ([{"type": "null"}] if type(None) in args else [])}
    if origin is tuple:
        items = _json_type(args[0])
        if args[-1] is Ellipsis:
            return {"type": "array", "items": items}
        return {"type": "array", "items": items, "minItems": len(args), "maxItems": len(args)}
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return {"type": names[hint]}


def _constrain(schema: dict[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Ranges and choices on the innermost value schema (the items of a list)."""
    if "anyOf" in schema:
        return {"anyOf": [_constrain(option, meta) for option in schema["anyOf"]]}
    if schema["type"] == "array":
        return {**schema, "items": _constrain(schema["items"], meta)}
    out = dict(schema)
    if schema["type"] == "null":
        return out
    if meta["choices"] is not None:
        out["enum"] = list(meta["choices"])
    if schema["type"] in ("integer", "number"):
        for key, bound in (("minimum", "low"), ("maximum", "high"), ("exclusiveMinimum", "above")):
            if meta[bound] is not None:
                out[key] = meta[bound]
    return out


def _default(f: dataclasses.Field) -> Any:
    value = f.default
    return list(value) if isinstance(value, tuple) else value


def option_schema(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    schema = _constrain(_json_type(hint), f.metadata)
    schema.update(description=f.metadata["help"], default=_default(f))
    if f.name in ("prompts", "image_prompts"):  # one string is taken as a list of one
        schema = {"anyOf": [{"type": "string"}, schema], "description": schema["description"]}
    return schema


def fields() -> list[dict[str, Any]]:
    """Every option for the page: name, group, flags, help, JSON schema and default."""
    hints = typing.get_type_hints(GenerateConfig)
    return [
        {
            "name": f.name,
            "group": f.metadata["group"],
            "flags": list(f.metadata["flags"]),
            "help": f.metadata["help"],
            "default": _default(f),
            "schema": option_schema(f, hints[f.name]),
        }
        for f in dataclasses.fields(GenerateConfig)
    ]


def request_schema(pairs: list[str]) -> dict[str, Any]:
    """The JSON schema of a job request: the option names, `prompt`, `model` and `video`."""
    hints = typing.get_type_hints(GenerateConfig)
    props = {f.name: option_schema(f, hints[f.name]) for f in dataclasses.fields(GenerateConfig)}
    props["prompt"] = {
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        "description": "the text prompt(s), as `prompts`; one per image of a batch",
    }
    props["model"] = {
        "type": "string",
        "enum": pairs,
        "description": "a VQGAN + CLIP pair by one name; its settings are the defaults",
    }
    props["video"] = {"type": "boolean", "description": "also write an mp4 of the progress"}
    props["seed"] = {
        "anyOf": [*props["seed"]["anyOf"], {"type": "string", "pattern": "^[0-9]+$"}],
        "description": props["seed"]["description"] + " (also as a decimal string: JavaScript "
        "rounds integers above 2**53)",
    }
    return {"type": "object", "properties": props, "additionalProperties": False}


@dataclass(frozen=True)
class JobRequest:
    config: GenerateConfig
    model: str | None
    video: bool


@dataclass(frozen=True)
class Policy:
    """What a request may name. Model files on the server only with `allow_model_paths`;
    registry models whose weights are not here only with `allow_downloads` (a request must not
    start a multi-GB download on a server others can reach); images only as uploads (`uploads`
    folder), never another server path or a URL."""

    uploads: Path
    allow_model_paths: bool = False
    video_available: bool = True
    allow_downloads: bool = True

    def upload_path(self, ref: str, option: str) -> str:
        """The server path of an uploaded image given as its ref ("uploads/<hex>.png") or as
        that path itself (settings of an earlier job); ConfigError for anything else."""
        from vqclip.serve.uploads import is_upload_name

        name = ref.removeprefix("uploads/") if ref.startswith("uploads/") else None
        if name is None and Path(ref).parent == self.uploads:
            name = Path(ref).name
        if name is None or not is_upload_name(name):
            raise ConfigError(
                f"{option}={ref!r}: images are uploaded first (POST /api/uploads) and given by "
                "the ref it answers, e.g. 'uploads/<id>.png'"
            )
        path = self.uploads / name
        if not path.is_file():
            raise ConfigError(f"{option}={ref!r}: no such upload; upload the image again")
        return str(path)

    def check_models(self, config: GenerateConfig) -> None:
        """Every option that names model weights or their config file (the declaration's
        `refers`, so none is missed): registry or packaged names only, unless the operator
        allows server paths."""
        if self.allow_model_paths:
            return
        from vqclip.weights.registry import PACKAGED, find_spec

        for option, name in model_references(config):
            if name not in PACKAGED and find_spec(name) is None:
                raise ConfigError(
                    f"{option}={name!r}: this server takes registry model names only (see "
                    "`vqclip models list`); the operator can allow paths with --allow-model-paths",
                    field=option,
                )
        for option, _path in model_references(config, "file"):
            raise ConfigError(
                f"{option}: a config file on the server; the operator can allow it with "
                "--allow-model-paths",
                field=option,
            )

    def check_downloads(self, config: GenerateConfig) -> None:
        """Registry weights that are not here yet, for any option that names a model, only
        with `allow_downloads`."""
        if self.allow_downloads:
            return
        from vqclip.weights.cache import is_cached, is_converted
        from vqclip.weights.registry import PACKAGED, find_spec

        for option, name in model_references(config):
            spec = find_spec(name)
            if name in PACKAGED or spec is None or is_cached(spec) or is_converted(spec):
                continue
            raise ConfigError(
                f"{option}={name!r}: its weights are not on this server, and this server does "
                "not download models on a request; the operator can run `vqclip models "
                "download` or start the server with --allow-downloads",
                field=option,
            )

    def job(self, body: Any) -> JobRequest:
        """A job request checked: a JSON object of option names (and prompt, model, video),
        validated by the config's own declaration. ConfigError names what is wrong."""
        from vqclip.generate.prompts import parse_image_prompts

        if not isinstance(body, Mapping):
            raise ConfigError('a job is a JSON object of option names, e.g. {"prompt": "..."}')
        given = dict(body)
        video = given.pop("video", False)
        if not isinstance(video, bool):
            raise ConfigError(f"video={video!r}: expected true or false")
        if video and not self.video_available:
            raise ConfigError(
                "video: this server has no imageio-ffmpeg (pip install vqclip[video])"
            )
        if given.get("device", "auto") != "auto":
            raise ConfigError(
                f"device={given['device']!r}: the server runs each job on a worker's device; "
                "leave it out or give 'auto'"
            )
        model = given.get("model")
        if isinstance(given.get("init_image"), str):
            given["init_image"] = self.upload_path(given["init_image"], "init_image")
        images = given.get("image_prompts")
        if isinstance(images, str):
            images = [images]
        if isinstance(images, list) and all(isinstance(s, str) for s in images):
            given["image_prompts"] = [
                "|".join(
                    f"{self.upload_path(spec.value, 'image_prompts')}:{spec.weight!r}:"
                    f"{_number(spec.stop)}"
                    for spec in parse_image_prompts(item)
                )
                for item in images
            ]
        seed = given.get("seed")
        if isinstance(seed, str) and seed.isascii() and seed.isdigit():
            given["seed"] = int(seed)  # seeds above 2**53 travel as strings (JavaScript)
        config = build_config(given)
        self.check_models(config)
        self.check_downloads(config)
        return JobRequest(config, model if isinstance(model, str) else None, video)


def public_settings(config: dict[str, Any], uploads: Path) -> dict[str, Any]:
    """A job's settings as clients see them: uploaded images as their refs ("uploads/<hash>.png"),
    not the server's paths (which the store keeps, for the workers)."""
    prefix = str(uploads) + "/"
    shown = dict(config)
    if isinstance(shown.get("init_image"), str):
        shown["init_image"] = shown["init_image"].replace(prefix, "uploads/")
    if isinstance(shown.get("image_prompts"), list):
        shown["image_prompts"] = [
            p.replace(prefix, "uploads/") if isinstance(p, str) else p
            for p in shown["image_prompts"]
        ]
    return shown


def _number(x: float) -> str:
    return ("-inf" if x < 0 else "inf") if math.isinf(x) else repr(x)
