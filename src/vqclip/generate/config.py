"""The settings of one generation run: each option declared once, validated on construction.

Every field carries its command-line flags, help text and group as metadata (`option`), so the
CLI, the web service and the batch runner all read the same declaration: a new option is one
edit here. Every value is JSON-serialisable: the config is what a saved image carries in its
metadata and what `--from-png` rebuilds, so it must be the complete description of a run.
"""

from __future__ import annotations

import dataclasses
import secrets
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vqclip import declare
from vqclip.declare import blaming, fail, option, option_names, validate_fields
from vqclip.errors import ConfigError
from vqclip.generate.augments import AUGMENTS, DEFAULT_AUGMENTS
from vqclip.generate.cutouts import METHODS as CUT_METHODS
from vqclip.prior.options import PriorConfig, no_prior

if typing.TYPE_CHECKING:
    from vqclip.weights.registry import ModelPair

INITS = ("random", "pixels", "gradient", "image", "prior")
OPTIMISERS = ("adam", "adamw", "adagrad", "adamax", "radam", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LR_SCALES = ("codebook", "none")
TV_TARGETS = ("image", "z")
DEFAULT_MODEL = "default"
SEED_LIMIT = 2**63


@dataclass(frozen=True)
class LoopConfig:
    """The loop's own options (`GenerateConfig` adds the prior's)."""

    prompts: tuple[str, ...] = option(
        (),
        "-p",
        "--prompts",
        help='text prompts "text:weight:stop|..." (negative weights push away); given more '
        "than once, one per image of the batch",
        group="prompts",
        action="append",
        metavar="PROMPT",
    )
    image_prompts: tuple[str, ...] = option(
        (),
        "-ip",
        "--image-prompts",
        help='image prompts "path_or_url:weight:stop|..."',
        group="prompts",
        action="append",
        metavar="IMAGES",
    )
    noise_prompt_seeds: tuple[int, ...] = option(
        (),
        "-nps",
        "--noise-prompt-seeds",
        help="seeds of random-embedding prompts",
        group="prompts",
        metavar="SEED",
    )
    noise_prompt_weights: tuple[float, ...] = option(
        (),
        "-npw",
        "--noise-prompt-weights",
        help="one weight per noise prompt",
        group="prompts",
        metavar="W",
    )
    change_prompt_every: int = option(
        0,
        "-cpe",
        "--change-prompt-every",
        help='story mode, for prompts whose parts are separated by "^": the next part every N '
        "steps (frames in an animation), the first again after the last; 0: an equal share each",
        group="prompts",
        low=0,
        high=10**7,
        metavar="N",
    )
    prompt_starts: tuple[int, ...] = option(
        (),
        "--prompt-starts",
        help="story mode: the step (frame in an animation) at which each ^ part starts, the "
        "first at 0",
        group="prompts",
        low=0,
        metavar="STEP",
    )
    vqgan: str = option(
        "vqgan_imagenet_f16_16384",
        "--vqgan",
        help="VQGAN registry name or checkpoint path",
        group="models",
        metavar="NAME",
        refers="model",
    )
    vqgan_config: str | None = option(
        None,
        "--vqgan-config",
        help="taming YAML for a .ckpt given by path",
        group="models",
        metavar="YAML",
        refers="file",
    )
    clip: tuple[str, ...] = option(
        ("clip_vit_b32_openai",),
        "--clip",
        help="CLIP registry names or paths; several = an ensemble",
        group="models",
        metavar="NAME",
        refers="model",
    )
    clip_weights: tuple[float, ...] = option(
        (), "--clip-weights", help="one loss weight per --clip model", group="models", metavar="W"
    )
    size: tuple[int, int] | None = option(
        None,
        "-s",
        "--size",
        help="image width and height; default 256x256 on a CPU, 512x512 on a GPU with 10 GB free",
        group="image and run",
        metavar=("W", "H"),
        low=1,
        high=2**15,
    )
    iterations: int = option(
        500, "-i", "--iterations", help="optimiser steps", group="image and run", low=1, high=10**7
    )
    seed: int | None = option(
        None,
        "-sd",
        "--seed",
        help="random seed (default: a random one, printed and stored with the image)",
        group="image and run",
        low=0,
        high=SEED_LIMIT - 1,
    )
    batch_size: int = option(
        1,
        "-b",
        "--batch",
        help="images optimised together (several prompts given: one image each)",
        group="image and run",
        low=1,
        high=4096,
    )
    device: str = option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps", group="speed")
    threads: int | None = option(
        None,
        "--threads",
        help="CPU threads (default: the physical cores, shared among the workers a command "
        "starts). On a CPU the image depends on it, so it is stored with the image and a "
        "resumed or rerun image uses the stored count",
        group="speed",
        low=1,
        high=1024,
        metavar="N",
    )
    precision: str = option(
        "auto",
        "--precision",
        help="the decoder's and CLIP's compute dtype; auto: bf16 on CUDA and on CPUs with native "
        "bf16, fp32 elsewhere",
        group="speed",
        choices=PRECISIONS,
    )
    cuda_graphs: bool = option(
        False,
        "--cuda-graphs",
        help="replay the decoder and CLIP as CUDA graphs (about 2x at 256x256 on an H100)",
        group="speed",
    )
    checkpoint_decoder: bool = option(
        False,
        "--checkpoint-decoder",
        help="recompute the decoder in the backward pass: 25-32% less peak memory, 9-14% slower",
        group="speed",
    )
    cutn: int = option(
        32, "-cuts", "--cutn", help="cutouts per image and step", group="cutouts", low=1, high=4096
    )
    cut_pow: float = option(
        1.0,
        "-cutp",
        "--cut-pow",
        help="cutout size power (>1: smaller)",
        group="cutouts",
        above=0,
        high=100,
    )
    cut_method: str = option(
        "crowson",
        "-cutm",
        "--cut-method",
        help="crowson: random crops; whole: the whole image; overview: some whole views, the "
        "rest crops",
        group="cutouts",
        choices=CUT_METHODS,
    )
    augments: tuple[str, ...] = option(
        DEFAULT_AUGMENTS,
        "-aug",
        "--augments",
        help=f"augmentation codes, in order: {' '.join(AUGMENTS)}",
        group="cutouts",
        choices=tuple(AUGMENTS),
        nargs="*",
        metavar="CODE",
    )
    noise_fac: float = option(
        0.1,
        "--noise-fac",
        help="per-cutout noise std is U(0, this)",
        group="cutouts",
        low=0,
        high=100,
    )
    init: str = option(
        "random",
        "-in",
        "--init",
        help="random codes, random coloured pixels, smooth gradient noise, an image, or prior: "
        "codes drawn from the --prior (a start it agrees with)",
        group="init and regularisers",
        choices=INITS,
    )
    init_image: str | None = option(
        None,
        "-ii",
        "--init-image",
        help="start from this image (encoded by the VQGAN)",
        group="init and regularisers",
    )
    init_weight: float = option(
        0.0,
        "-iw",
        "--init-weight",
        help="weight of a loss that anchors z to its initial value (the random codes or the "
        "encoded init image). nerdyrodent's init_weight pulls z toward zero instead",
        group="init and regularisers",
        low=0,
        high=1e6,
    )
    tv_weight: float = option(
        0.0,
        "--tv-weight",
        help="total-variation loss weight",
        group="init and regularisers",
        low=0,
        high=1e6,
    )
    tv_on: str = option(
        "image",
        "--tv-on",
        help="total variation of the image's pixels, or of the latent z (fewer code changes)",
        group="init and regularisers",
        choices=TV_TARGETS,
    )
    scales: tuple[float, ...] = option(
        (1.0,),
        "--scales",
        help="coarse to fine: fractions of the size optimised in turn, ending at 1 (e.g. 0.5 1); "
        "the steps are split equally, and the latent is carried up by decoding, upscaling and "
        "re-encoding the image",
        group="image and run",
        above=0,
        high=1,
        metavar="F",
    )
    optimiser: str = option(
        "adam",
        "-opt",
        "--optimiser",
        help="optimiser (radam: rectified Adam, from torch)",
        group="optimiser",
        choices=OPTIMISERS,
    )
    lr: float = option(
        0.1, "-lr", "--learning-rate", help="learning rate", group="optimiser", above=0, high=1e3
    )
    lr_scale: str = option(
        "codebook",
        "--lr-scale",
        help="codebook: the learning rate counts codebook standard deviations, so it means the "
        "same for VQGANs of different scale; none: absolute units, as nerdyrodent's",
        group="optimiser",
        choices=LR_SCALES,
    )
    schedule: str = option(
        "constant",
        "--schedule",
        help="learning-rate schedule",
        group="optimiser",
        choices=SCHEDULES,
    )
    step_size: int = option(
        100,
        "--step-size",
        help="steps between decays of --schedule step",
        group="optimiser",
        low=1,
        high=10**7,
    )
    gamma: float = option(
        0.5, "--gamma", help="decay factor of --schedule step", group="optimiser", above=0, high=100
    )


@dataclass(frozen=True)
class GenerateConfig(PriorConfig, LoopConfig):
    """One run: the loop's options, then the token prior's (declared in vqclip.prior.options).
    `prompts` holds one "text:weight:stop|..." string per image of the batch, or a single
    string shared by all `batch_size` images."""

    def __post_init__(self) -> None:
        validate_fields(self)
        self._normalise_prior()
        self._check_together()
        self._check_prior(init=self.init)
        if self.seed is None:
            object.__setattr__(self, "seed", secrets.randbelow(2**31))
        if len(self.prompts) > 1 and self.batch_size == 1:
            object.__setattr__(self, "batch_size", len(self.prompts))
        if self.init_image and self.init in ("pixels", "gradient", "prior"):
            fail("init", self.init, "an init image (-ii) is a start of its own; give one of them")
        if self.init_image and self.init != "image":
            object.__setattr__(self, "init", "image")
        self._check_prompts()

    def _check_together(self) -> None:
        if not (self.prompts or self.image_prompts or self.noise_prompt_seeds):
            fail("prompts", self.prompts, "give at least one text, image or noise prompt")
        if len(self.prompts) > 1 and self.batch_size not in (1, len(self.prompts)):
            fail(
                "prompts",
                self.prompts,
                f"give one prompt string shared by the batch or one per image ({self.batch_size})",
            )
        if not self.clip:
            fail("clip", self.clip, "name at least one CLIP model")
        if self.clip_weights and len(self.clip_weights) != len(self.clip):
            fail(
                "clip_weights",
                self.clip_weights,
                f"give one weight per CLIP model ({len(self.clip)})",
            )
        if self.clip_weights and not any(self.clip_weights):
            fail("clip_weights", self.clip_weights, "all zero: no CLIP would steer the image")
        if self.noise_prompt_weights and len(self.noise_prompt_weights) != len(
            self.noise_prompt_seeds
        ):
            fail(
                "noise_prompt_weights", self.noise_prompt_weights, "give one weight per noise seed"
            )
        if self.cuda_graphs and self.checkpoint_decoder:
            fail(
                "checkpoint_decoder",
                True,
                "not with cuda_graphs (a graph keeps its activations anyway); choose one",
            )
        if not self.scales or self.scales[-1] != 1 or list(self.scales) != sorted(set(self.scales)):
            fail("scales", self.scales, "give increasing fractions of the size ending at 1")
        if len(self.scales) > self.iterations:
            fail("scales", self.scales, f"more scales than iterations ({self.iterations})")
        if self.init == "image" and not self.init_image:
            fail("init_image", self.init_image, "init='image' needs an init image path")

    def _check_prompts(self) -> None:
        """Prompt syntax errors are reported here, before any model loads."""
        from vqclip.generate.prompts import parse_image_prompts, parse_noise_prompts, parse_story
        from vqclip.generate.story import check_schedule

        with blaming("prompts"):
            for text in self.prompts:
                if not text.strip():
                    why = 'a prompt is empty; write some text, e.g. "a lighthouse"'
                    fail("prompts", text, why)
                try:  # a byte that is not UTF-8 reaches Python as a lone surrogate
                    text.encode("utf-8")
                except UnicodeEncodeError as e:
                    bad = text.encode("utf-8", "surrogateescape")[e.start : e.end]
                    fail(
                        "prompts",
                        text.encode("utf-8", "replace").decode(),
                        f"holds the byte(s) {bad!r} at character {e.start}, which are not UTF-8 "
                        "text; write the prompt in UTF-8 (the image's metadata stores it)",
                    )
                parse_story(text)
        counts = [parse_story(text).length for text in self.prompts]
        with blaming("prompt_starts" if self.prompt_starts else "change_prompt_every"):
            check_schedule(self.change_prompt_every, self.prompt_starts, counts)
        with blaming("image_prompts"):
            for item in self.image_prompts:
                parse_image_prompts(item)
        with blaming("noise_prompt_seeds"):
            parse_noise_prompts(self.noise_prompt_seeds, self.noise_prompt_weights)

    @property
    def plug_ins(self) -> tuple[str, ...]:
        """The names of the loop's plug-ins this run needs (vqclip.generate.extension)."""
        return ("prior",) if self.prior else ()

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
        return declare.to_mapping(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerateConfig:
        if isinstance(data, Mapping):
            data = _without_retired(data)
        return declare.from_mapping(cls, data, "settings")


OPTION_NAMES = option_names(GenerateConfig)

# Options that were removed, with the one value they may still carry in stored settings (a
# PNG's metadata, a checkpoint): that value meant what vqclip does now, so it is dropped.
RETIRED = {"prior_context": "tokens"}


def _without_retired(data: Mapping[str, Any]) -> Mapping[str, Any]:
    for name, value in RETIRED.items():
        if name in data and data[name] != value:
            raise ConfigError(
                f"{name}={data[name]!r}: this option was removed; only {value!r}, what vqclip "
                "does now, is read from stored settings",
                field=name,
            )
    return {k: v for k, v in data.items() if k not in RETIRED}


def declaration(name: str, declared: type = GenerateConfig) -> Mapping[str, Any]:
    """The `option` declaration of field `name`: flags, help, group, choices and bounds."""
    return declare.declaration(name, declared)


def build_config(given: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> GenerateConfig:
    """The run described by `given` (option name -> value, as a user gave them on the command
    line or in a JSON job) on top of `base` (stored settings, e.g. a PNG's), else on top of the
    `model` pair's settings and the declared defaults.

    Beside the field names, `given` may hold `model` (a VQGAN + CLIP pair by one name, whose
    settings become the defaults) and `prompt` (one prompt string or a list, as `prompts`).
    """
    from vqclip.weights.registry import resolve_pair

    if not isinstance(given, Mapping):
        raise ConfigError(f"settings must be a JSON object of option names, got {given!r}")
    given = dict(given)
    if "prompt" in given:
        if "prompts" in given:
            raise ConfigError("give either prompt or prompts, not both", field="prompt")
        given["prompts"] = given.pop("prompt")
    model = given.pop("model", None)
    values: dict[str, Any] = dict(base or {})
    if model is not None or base is None:
        if model is not None and not isinstance(model, str):
            raise ConfigError(f"model={model!r}: expected the name of a model pair", field="model")
        pair = resolve_pair(model or DEFAULT_MODEL)
        values.update(vqgan=pair.vqgan, clip=pair.clips, vqgan_config=None)
        values.update(pair_defaults(pair, given))
    values.update(given)
    return GenerateConfig.from_dict(values)


def pair_defaults(pair: ModelPair, given: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a model pair brings, under the user's `given` ones. A pair whose default
    uses a token prior (the toy pair) brings its prior_* settings only while the prior stays:
    `prior=None` (`--prior none`) alone gives the plain loop, without also undoing each option
    that needs a prior."""
    defaults = dict(pair.defaults)
    if no_prior(given.get("prior", defaults.get("prior"))):
        defaults = {k: v for k, v in defaults.items() if not k.startswith("prior")}
    return defaults
