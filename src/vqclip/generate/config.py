"""The settings of one generation run, validated on construction.

Every field is JSON-serialisable: the config is what a saved PNG carries in its metadata and what
`--from-png` rebuilds, so it must be the complete description of a run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vqclip.errors import ConfigError

INITS = ("random", "pixels", "gradient", "image")
OPTIMISERS = ("adam", "adamw", "adagrad", "adamax", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "step")
CUT_METHODS = ("crowson", "whole", "overview")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LR_SCALES = ("codebook", "none")
TV_TARGETS = ("image", "z")
DEFAULT_AUGMENTS = ("Af", "Pe", "Ji", "Er")
DEFAULT_VQGAN = "vqgan_imagenet_f16_16384"
DEFAULT_CLIP = "clip_vit_b32_openai"


def _fail(name: str, value: Any, why: str) -> None:
    raise ConfigError(f"{name}={value!r}: {why}")


@dataclass(frozen=True)
class GenerateConfig:
    """One run. `prompts` holds one "text:weight:stop|..." string per image of the batch, or a
    single string shared by all `batch_size` images."""

    prompts: tuple[str, ...] = ()
    image_prompts: tuple[str, ...] = ()
    noise_prompt_seeds: tuple[int, ...] = ()
    noise_prompt_weights: tuple[float, ...] = ()
    size: tuple[int, int] = (256, 256)
    iterations: int = 500
    seed: int = 0
    batch_size: int = 1
    vqgan: str = DEFAULT_VQGAN
    vqgan_config: str | None = None  # taming YAML for a .ckpt given by path
    clip: tuple[str, ...] = (DEFAULT_CLIP,)
    clip_weights: tuple[float, ...] = ()
    cutn: int = 32
    cut_pow: float = 1.0
    cut_method: str = "crowson"
    augments: tuple[str, ...] = DEFAULT_AUGMENTS
    noise_fac: float = 0.1
    init: str = "random"
    init_image: str | None = None
    init_weight: float = 0.0
    tv_weight: float = 0.0
    tv_on: str = "image"  # image: pixels; z: the latent grid (penalises code changes)
    optimiser: str = "adam"
    lr: float = 0.1
    lr_scale: str = "codebook"  # codebook: lr in codebook standard deviations; none: absolute
    schedule: str = "constant"
    step_size: int = 100
    gamma: float = 0.5
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 on CUDA and on CPUs with bf16 support, else fp32
    cuda_graphs: bool = False  # replay the decoder and CLIP towers as CUDA graphs
    checkpoint_decoder: bool = False  # recompute decoder levels in backward: less memory

    def __post_init__(self) -> None:
        # Lists from JSON or callers become tuples so the config stays hashable and comparable.
        for name in (
            "prompts",
            "image_prompts",
            "noise_prompt_seeds",
            "noise_prompt_weights",
            "size",
            "clip",
            "clip_weights",
            "augments",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        if not (self.prompts or self.image_prompts or self.noise_prompt_seeds):
            _fail("prompts", self.prompts, "give at least one text, image or noise prompt")
        if len(self.size) != 2 or any(not isinstance(s, int) or s <= 0 for s in self.size):
            _fail("size", self.size, "expected two positive integers (width, height)")
        for name in ("iterations", "batch_size", "cutn", "step_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                _fail(name, value, "must be a positive integer")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            _fail("seed", self.seed, "must be an integer in [0, 2**63)")
        if len(self.prompts) not in (0, 1, self.batch_size):
            _fail(
                "prompts",
                self.prompts,
                f"give one prompt string shared by the batch or one per image ({self.batch_size})",
            )
        if not self.clip:
            _fail("clip", self.clip, "name at least one CLIP model")
        if self.clip_weights and len(self.clip_weights) != len(self.clip):
            _fail(
                "clip_weights",
                self.clip_weights,
                f"give one weight per CLIP model ({len(self.clip)})",
            )
        if self.noise_prompt_weights and len(self.noise_prompt_weights) != len(
            self.noise_prompt_seeds
        ):
            _fail(
                "noise_prompt_weights", self.noise_prompt_weights, "give one weight per noise seed"
            )
        for name in ("lr", "cut_pow", "gamma"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                _fail(name, value, "must be a positive number")
        for name in ("noise_fac", "init_weight", "tv_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                _fail(name, value, "must be a number >= 0")
        for name, allowed in (
            ("init", INITS),
            ("optimiser", OPTIMISERS),
            ("schedule", SCHEDULES),
            ("precision", PRECISIONS),
            ("lr_scale", LR_SCALES),
            ("cut_method", CUT_METHODS),
            ("tv_on", TV_TARGETS),
        ):
            if getattr(self, name) not in allowed:
                _fail(name, getattr(self, name), f"choose one of {', '.join(allowed)}")
        if self.cuda_graphs and self.checkpoint_decoder:
            _fail(
                "checkpoint_decoder",
                True,
                "not with cuda_graphs (a graph keeps its activations anyway); choose one",
            )
        if self.init == "image" and not self.init_image:
            _fail("init_image", self.init_image, "init='image' needs an init image path")
        if self.init_image and self.init != "image":
            object.__setattr__(self, "init", "image")

    @property
    def weights_of_clips(self) -> tuple[float, ...]:
        return self.clip_weights or (1.0,) * len(self.clip)

    def prompt_for(self, image_index: int) -> str:
        if not self.prompts:
            return ""
        return self.prompts[image_index if len(self.prompts) > 1 else 0]

    def replace(self, **changes: Any) -> GenerateConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerateConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown settings {unknown}; known: {sorted(known)}")
        return cls(**data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
