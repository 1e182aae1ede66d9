"""CLIP configuration (ViT or ResNet image tower): sizes, activation and pixel statistics,
validated on construction.

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
from vqclip.validation import is_int

_INT_FIELDS = (
    "embed_dim",
    "image_size",
    "vision_width",
    "vision_heads",
    "context_length",
    "vocab_size",
    "text_width",
    "text_layers",
    "text_heads",
)
# OpenAI's rule for models whose configs do not name the head count.
_HEAD_WIDTH = 64


# The image normalisation of OpenAI's CLIP (and of the OpenCLIP models trained like it).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True, kw_only=True)
class CLIPConfig:
    """Sizes of a CLIP. `quick_gelu` must match the weights: True for OpenAI's models
    (x * sigmoid(1.702 x)), False for LAION's OpenCLIP ViTs (exact GELU).

    The image tower is a ViT when `vision_layers` is an int (then `patch_size` is required),
    and CLIP's ResNet (RN50 and its siblings) when it is four block counts, e.g. (3, 4, 6, 3);
    then `vision_width` is the stem's width, there is no `patch_size`, and `image_size` is a
    multiple of 32. Head counts default to width // 64 (a ResNet's attention pool: width * 32
    // 64, OpenAI's rule)."""

    embed_dim: int
    image_size: int
    patch_size: int | None = None
    vision_width: int
    vision_layers: int | tuple[int, int, int, int]
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
        if isinstance(self.vision_layers, list):  # from JSON
            object.__setattr__(self, "vision_layers", tuple(self.vision_layers))
        for name in ("vision_heads", "text_heads"):
            if getattr(self, name) is None:
                width = self.vision_width if name == "vision_heads" else self.text_width
                if name == "vision_heads" and self.is_resnet and is_int(width):
                    width *= 32  # the attention pool's width
                object.__setattr__(self, name, max(width // _HEAD_WIDTH, 1))
        for name in ("mean", "std"):
            object.__setattr__(self, name, _triple(name, getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"CLIPConfig.{name} must be a positive integer, got {value!r}")
        self._validate_vision_layers()
        if not isinstance(self.quick_gelu, bool):
            raise ConfigError(
                f"CLIPConfig.quick_gelu must be True or False, got {self.quick_gelu!r}"
            )
        for width, heads in (("vision_width", "vision_heads"), ("text_width", "text_heads")):
            w = getattr(self, width) * (32 if width == "vision_width" and self.is_resnet else 1)
            if w % getattr(self, heads):
                what = f"{width} * 32 ({w})" if w != getattr(self, width) else f"{width} ({w})"
                raise ConfigError(
                    f"CLIPConfig.{what} must be divisible by {heads} ({getattr(self, heads)})"
                )
        if self.context_length < 2:
            raise ConfigError(
                f"CLIPConfig.context_length must be at least 2 (start and end tokens), "
                f"got {self.context_length}"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"CLIPConfig.std must be positive, got {self.std!r}")

    def _validate_vision_layers(self) -> None:
        layers, patch = self.vision_layers, self.patch_size
        if self.is_resnet:
            if len(layers) != 4 or not all(is_int(n) and n >= 1 for n in layers):
                raise ConfigError(
                    "CLIPConfig.vision_layers must be a positive integer (a ViT) or four "
                    f"positive block counts (a ResNet, e.g. [3, 4, 6, 3]), got {list(layers)!r}"
                )
            if patch is not None:
                raise ConfigError(
                    f"CLIPConfig.patch_size must be None for a ResNet image tower, got {patch!r}"
                )
            if self.image_size % 32:
                raise ConfigError(
                    f"CLIPConfig.image_size ({self.image_size}) must be a multiple of 32 for a "
                    "ResNet image tower (it downsamples 32x)"
                )
            if self.vision_width % 2:
                raise ConfigError(
                    f"CLIPConfig.vision_width must be even for a ResNet, got {self.vision_width}"
                )
            return
        if not is_int(layers) or layers < 1:
            raise ConfigError(
                "CLIPConfig.vision_layers must be a positive integer (a ViT) or four positive "
                f"block counts (a ResNet, e.g. [3, 4, 6, 3]), got {layers!r}"
            )
        if not is_int(patch) or patch < 1:
            raise ConfigError(
                f"CLIPConfig.patch_size must be a positive integer for a ViT, got {patch!r}"
            )
        if self.image_size % patch:
            raise ConfigError(
                f"CLIPConfig.image_size ({self.image_size}) must be a multiple of "
                f"patch_size ({patch})"
            )

    @property
    def is_resnet(self) -> bool:
        """True for CLIP's ResNet image tower, False for a ViT."""
        return isinstance(self.vision_layers, tuple)

    @property
    def grid_size(self) -> int:
        """Patches per side of the image (a ViT), or the attention pool's grid (a ResNet)."""
        return self.image_size // (32 if self.is_resnet else self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.is_resnet:
            d["vision_layers"] = list(self.vision_layers)
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
        raise CheckpointError(f"not a CLIP state dict: key {key!r} is missing")
    return tuple(state_dict[key].shape)


def _square_grid(state_dict: Mapping[str, torch.Tensor], key: str) -> int:
    positions = _shape(state_dict, key)[0]
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions:
        raise CheckpointError(
            f"{key} has {positions} rows; a square grid plus a class (or pooled) token needs "
            "n*n + 1"
        )
    return grid


def clip_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, quick_gelu: bool
) -> CLIPConfig:
    """Read a CLIP's sizes off its tensor shapes, as OpenAI's `build_model` does (a ViT, or a
    ResNet when `visual.layer1.0.conv1.weight` is present).

    Head counts are width // 64 (true of every OpenAI and LAION model). The activation cannot be
    seen in the weights, so `quick_gelu` must be given.
    """
    if "visual.layer1.0.conv1.weight" in state_dict:
        vision = dict(
            vision_width=_shape(state_dict, "visual.layer1.0.conv1.weight")[0],
            vision_layers=tuple(_block_count(state_dict, f"visual.layer{i}.") for i in range(1, 5)),
            image_size=32 * _square_grid(state_dict, "visual.attnpool.positional_embedding"),
        )
        _shape(state_dict, "visual.attnpool.c_proj.weight")
    else:
        vision_width, _, patch_size, _ = _shape(state_dict, "visual.conv1.weight")
        vision = dict(
            vision_width=vision_width,
            vision_layers=_block_count(state_dict, "visual.transformer.resblocks."),
            patch_size=patch_size,
            image_size=patch_size * _square_grid(state_dict, "visual.positional_embedding"),
        )
        _shape(state_dict, "visual.proj")
    context_length, _ = _shape(state_dict, "positional_embedding")
    vocab_size, _ = _shape(state_dict, "token_embedding.weight")
    text_width = _shape(state_dict, "ln_final.weight")[0]
    embed_dim = _shape(state_dict, "text_projection")[1]
    return CLIPConfig(
        embed_dim=embed_dim,
        **vision,
        context_length=context_length,
        vocab_size=vocab_size,
        text_width=text_width,
        text_layers=_block_count(state_dict, "transformer.resblocks."),
        quick_gelu=quick_gelu,
    )


# presets: sizes of the published models (OpenCLIP model_configs); the activation depends on
# whose weights are loaded, so `clip_preset` asks for it.

CLIP_PRESETS: dict[str, dict[str, Any]] = {
    "RN50": dict(
        embed_dim=1024,
        image_size=224,
        vision_width=64,
        vision_layers=(3, 4, 6, 3),
        text_width=512,
        text_layers=12,
    ),
    "RN101": dict(
        embed_dim=512,
        image_size=224,
        vision_width=64,
        vision_layers=(3, 4, 23, 3),
        text_width=512,
        text_layers=12,
    ),
    "RN50x4": dict(
        embed_dim=640,
        image_size=288,
        vision_width=80,
        vision_layers=(4, 6, 10, 6),
        text_width=640,
        text_layers=12,
    ),
    "RN50x16": dict(
        embed_dim=768,
        image_size=384,
        vision_width=96,
        vision_layers=(6, 8, 18, 8),
        text_width=768,
        text_layers=12,
    ),
    "RN50x64": dict(
        embed_dim=1024,
        image_size=448,
        vision_width=128,
        vision_layers=(3, 15, 36, 10),
        text_width=1024,
        text_layers=12,
    ),
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
