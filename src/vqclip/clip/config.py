"""CLIP ViT configuration: sizes, activation and pixel statistics, validated on construction.

Sizes of the published models come from OpenCLIP's model_configs; a checkpoint's own sizes can be
read off its tensor shapes (`clip_config_from_state_dict`), as OpenAI's `build_model` does.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vqclip.errors import CheckpointError, ConfigError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_INT_FIELDS = (
    "embed_dim",
    "image_size",
    "patch_size",
    "vision_width",
    "vision_layers",
    "vision_heads",
    "context_length",
    "vocab_size",
    "text_width",
    "text_layers",
    "text_heads",
)
# OpenAI's rule for models whose configs do not name the head count.
_HEAD_WIDTH = 64


# main class


@dataclass(frozen=True, kw_only=True)
class CLIPConfig:
    """Sizes of a ViT CLIP. `quick_gelu` must match the weights: True for OpenAI's models
    (x * sigmoid(1.702 x)), False for LAION's OpenCLIP ViTs (exact GELU). Head counts default
    to width // 64."""

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int | None = None
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int
    text_layers: int
    text_heads: int | None = None
    quick_gelu: bool
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    def __post_init__(self) -> None:
        for name in ("vision_heads", "text_heads"):
            if getattr(self, name) is None:
                width = self.vision_width if name == "vision_heads" else self.text_width
                object.__setattr__(self, name, max(width // _HEAD_WIDTH, 1))
        for name in ("mean", "std"):
            object.__setattr__(self, name, _triple(name, getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"CLIPConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.quick_gelu, bool):
            raise ConfigError(
                f"CLIPConfig.quick_gelu must be True or False, got {self.quick_gelu!r}"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"CLIPConfig.image_size ({self.image_size}) must be a multiple of "
                f"patch_size ({self.patch_size})"
            )
        for width, heads in (("vision_width", "vision_heads"), ("text_width", "text_heads")):
            if getattr(self, width) % getattr(self, heads):
                raise ConfigError(
                    f"CLIPConfig.{width} ({getattr(self, width)}) must be divisible by "
                    f"{heads} ({getattr(self, heads)})"
                )
        if self.context_length < 2:
            raise ConfigError(
                f"CLIPConfig.context_length must be at least 2 (start and end tokens), "
                f"got {self.context_length}"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"CLIPConfig.std must be positive, got {self.std!r}")

    @property
    def grid_size(self) -> int:
        """Patches per side of the image."""
        return self.image_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CLIPConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown CLIPConfig field(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**d)
        except TypeError as e:  # a required field is missing
            raise ConfigError(f"CLIPConfig: {e}") from None


# helper functions


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"CLIPConfig.{name} must be 3 numbers, got {value!r}") from None
    if len(values) != 3:
        raise ConfigError(f"CLIPConfig.{name} must be 3 numbers (R, G, B), got {value!r}")
    return values  # type: ignore[return-value]


def _block_count(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state_dict if (m := pattern.match(k))})


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointError(
            f"not a ViT CLIP state dict: key {key!r} is missing "
            "(ResNet CLIP models such as RN50 are not supported)"
        )
    return tuple(state_dict[key].shape)


def clip_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, quick_gelu: bool
) -> CLIPConfig:
    """Read a ViT CLIP's sizes off its tensor shapes, as OpenAI's `build_model` does.

    Head counts are width // 64 (true of every OpenAI and LAION ViT). The activation cannot be
    seen in the weights, so `quick_gelu` must be given.
    """
    vision_width, _, patch_size, _ = _shape(state_dict, "visual.conv1.weight")
    positions = _shape(state_dict, "visual.positional_embedding")[0]
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions:
        raise CheckpointError(
            f"visual.positional_embedding has {positions} rows; a square patch grid plus a class "
            "token needs n*n + 1"
        )
    context_length, _ = _shape(state_dict, "positional_embedding")
    vocab_size, _ = _shape(state_dict, "token_embedding.weight")
    text_width = _shape(state_dict, "ln_final.weight")[0]
    embed_dim = _shape(state_dict, "text_projection")[1]
    _shape(state_dict, "visual.proj")
    return CLIPConfig(
        embed_dim=embed_dim,
        image_size=patch_size * grid,
        patch_size=patch_size,
        vision_width=vision_width,
        vision_layers=_block_count(state_dict, "visual.transformer.resblocks."),
        context_length=context_length,
        vocab_size=vocab_size,
        text_width=text_width,
        text_layers=_block_count(state_dict, "transformer.resblocks."),
        quick_gelu=quick_gelu,
    )


# presets: sizes of the published models (OpenCLIP model_configs); the activation depends on
# whose weights are loaded, so `clip_preset` asks for it.

CLIP_PRESETS: dict[str, dict[str, int]] = {
    "ViT-B-32": dict(
        embed_dim=512,
        image_size=224,
        patch_size=32,
        vision_width=768,
        vision_layers=12,
        text_width=512,
        text_layers=12,
    ),
    "ViT-B-16": dict(
        embed_dim=512,
        image_size=224,
        patch_size=16,
        vision_width=768,
        vision_layers=12,
        text_width=512,
        text_layers=12,
    ),
    "ViT-L-14": dict(
        embed_dim=768,
        image_size=224,
        patch_size=14,
        vision_width=1024,
        vision_layers=24,
        text_width=768,
        text_layers=12,
    ),
    "ViT-L-14-336": dict(
        embed_dim=768,
        image_size=336,
        patch_size=14,
        vision_width=1024,
        vision_layers=24,
        text_width=768,
        text_layers=12,
    ),
}


def clip_preset(name: str, *, quick_gelu: bool) -> CLIPConfig:
    """The config of a published model by OpenCLIP name, e.g. `clip_preset("ViT-B-32",
    quick_gelu=True)` for OpenAI's ViT-B/32 weights."""
    if name not in CLIP_PRESETS:
        raise ConfigError(f"unknown CLIP preset {name!r}; known: {', '.join(CLIP_PRESETS)}")
    return CLIPConfig(**CLIP_PRESETS[name], quick_gelu=quick_gelu)
