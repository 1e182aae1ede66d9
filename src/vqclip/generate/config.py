"""The settings of one generation run: each option declared once, validated on construction.

Every field carries its command-line flags, help text and group as metadata (`option`), so the
CLI, the web service and the batch runner all read the same declaration: a new option is one
edit here. Every value is JSON-serialisable: the config is what a saved image carries in its
metadata and what `--from-png` rebuilds, so it must be the complete description of a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import secrets
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from vqclip.errors import ConfigError
from vqclip.generate.augments import AUGMENTS, DEFAULT_AUGMENTS
from vqclip.generate.cutouts import METHODS as CUT_METHODS
from vqclip.validation import is_int

if typing.TYPE_CHECKING:
    from vqclip.weights.registry import ModelPair

INITS = ("random", "pixels", "gradient", "image", "prior")
OPTIMISERS = ("adam", "adamw", "adagrad", "adamax", "radam", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LR_SCALES = ("codebook", "none")
TV_TARGETS = ("image", "z")
PRIOR_CONTEXTS = ("tokens", "soft")
DEFAULT_MODEL = "default"
SEED_LIMIT = 2**63


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


@dataclass(frozen=True)
class GenerateConfig:
    """One run. `prompts` holds one "text:weight:stop|..." string per image of the batch, or a
    single string shared by all `batch_size` images."""

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
    prior: str | None = option(
        None,
        "--prior",
        help="a token transformer whose loss keeps the latent grid's token layout like its "
        "training images' (fewer stray fragments): toy_prior, a taming Net2NetTransformer .ckpt, "
        "or a registry name whose file holds one (faceshq; its VQGAN must be --vqgan)",
        group="prior and scales",
        metavar="NAME",
        refers="model",
    )
    prior_config: str | None = option(
        None,
        "--prior-config",
        help="taming YAML of a --prior .ckpt given by path (default: the .yaml beside it)",
        group="prior and scales",
        metavar="YAML",
        refers="file",
    )
    prior_weight: float = option(
        1.0,
        "--prior-weight",
        help="weight of the prior's loss (nats per token)",
        group="prior and scales",
        low=0,
        high=1e6,
        metavar="W",
    )
    prior_ramp: int = option(
        0,
        "--prior-ramp",
        help="steps over which the prior's weight rises from 0 (the guides set colours first)",
        group="prior and scales",
        low=0,
        high=10**7,
        metavar="N",
    )
    prior_temperature: float = option(
        1.0,
        "--prior-temperature",
        help="softness of the latent's code assignment the prior scores, in units of the "
        "codebook's mean squared nearest-neighbour distance",
        group="prior and scales",
        above=0,
        high=1e6,
        metavar="T",
    )
    prior_context: str = option(
        "tokens",
        "--prior-context",
        help="what the prior reads before each token: tokens (the codes the image shows; each "
        "soft assignment is pulled toward the prior's prediction) or soft (the soft "
        "assignments themselves, differentiated through the transformer)",
        group="prior and scales",
        choices=PRIOR_CONTEXTS,
    )
    prior_resample_every: int = option(
        0,
        "--prior-resample-every",
        help="every N steps (the last one too when N divides the steps), redraw the tokens "
        "the --prior finds least likely from its prediction given the tokens before them; "
        "--prior-weight 0 for resampling without the prior's loss (0: never)",
        group="prior and scales",
        low=0,
        high=10**7,
        metavar="N",
    )
    prior_final_passes: int = option(
        0,
        "--prior-final-passes",
        help="after the last step, redraw the tokens the --prior finds least likely N more "
        "times (each pass as a resampling: --prior-resample-fraction, --prior-candidates): "
        "cleans up what the loop painted since the last resampling (0: none)",
        group="prior and scales",
        low=0,
        high=64,
        metavar="N",
    )
    prior_resample_fraction: float = option(
        0.1,
        "--prior-resample-fraction",
        help="share of each image's tokens redrawn at each --prior-resample-every: those the "
        "prior finds least likely",
        group="prior and scales",
        above=0,
        high=1,
        metavar="F",
    )
    prior_draw_temperature: float = option(
        1.0,
        "--prior-draw-temperature",
        help="temperature of the tokens drawn from the prior (--init prior, resampling); "
        "below 1 the likelier tokens are drawn more often",
        group="prior and scales",
        above=0,
        high=100,
        metavar="T",
    )
    prior_guidance: float = option(
        0.0,
        "--prior-guidance",
        help="with a masked prior (toy_masked_prior): how strongly the guides steer its draws "
        "(--init prior, resampling); each token's logits gain the guides' first-order loss fall "
        "for that code, in units of its spread over the image (0: the prior alone)",
        group="prior and scales",
        low=0,
        high=1000,
        metavar="G",
    )
    prior_class_guidance: float = option(
        1.0,
        "--prior-class-guidance",
        help="with a class-conditional masked prior (toy_shape_prior): its logits with the class "
        "minus without, times S, added to those without (classifier-free guidance; 1: the "
        "class's own prediction, above 1 the class counts more, 0 ignores it)",
        group="prior and scales",
        low=0,
        high=100,
        metavar="S",
    )
    prior_draw_steps: int = option(
        8,
        "--prior-draw-steps",
        help="with a masked prior: rounds in which the drawn tokens are filled in (a random "
        "few first, then more: MaskGIT's cosine schedule)",
        group="prior and scales",
        low=1,
        high=256,
        metavar="N",
    )
    prior_candidates: int = option(
        1,
        "--prior-candidates",
        help="wherever the prior draws (the start with --init prior, each resampling): draw K "
        "grids per image and keep the one the guides like best for its prompt (the whole image "
        "under the loop's prompt losses)",
        group="prior and scales",
        low=1,
        high=4096,
        metavar="K",
    )
    prior_class: int | None = option(
        None,
        "--prior-class",
        help="class label of a class-conditional prior (ImageNet's cin transformer: 0-999); a "
        "masked prior that names its classes (toy_shape_prior) takes, when this is not given, "
        "each image's class from its prompt: the name CLIP finds nearest",
        group="prior and scales",
        low=0,
        metavar="N",
    )
    scales: tuple[float, ...] = option(
        (1.0,),
        "--scales",
        help="coarse to fine: fractions of the size optimised in turn, ending at 1 (e.g. 0.5 1); "
        "the steps are split equally, and the latent is carried up by decoding, upscaling and "
        "re-encoding the image",
        group="prior and scales",
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

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.prior is not None and no_prior(self.prior):
            object.__setattr__(self, "prior", None)
        self._check_together()
        if self.seed is None:
            object.__setattr__(self, "seed", secrets.randbelow(2**31))
        if len(self.prompts) > 1 and self.batch_size == 1:
            object.__setattr__(self, "batch_size", len(self.prompts))
        if self.init_image and self.init != "image":
            object.__setattr__(self, "init", "image")
        self._check_prompts()

    def _check_together(self) -> None:
        if not (self.prompts or self.image_prompts or self.noise_prompt_seeds):
            _fail("prompts", self.prompts, "give at least one text, image or noise prompt")
        if len(self.prompts) > 1 and self.batch_size not in (1, len(self.prompts)):
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
        if self.clip_weights and not any(self.clip_weights):
            _fail("clip_weights", self.clip_weights, "all zero: no CLIP would steer the image")
        if self.noise_prompt_weights and len(self.noise_prompt_weights) != len(
            self.noise_prompt_seeds
        ):
            _fail(
                "noise_prompt_weights", self.noise_prompt_weights, "give one weight per noise seed"
            )
        if self.cuda_graphs and self.checkpoint_decoder:
            _fail(
                "checkpoint_decoder",
                True,
                "not with cuda_graphs (a graph keeps its activations anyway); choose one",
            )
        if not self.scales or self.scales[-1] != 1 or list(self.scales) != sorted(set(self.scales)):
            _fail("scales", self.scales, "give increasing fractions of the size ending at 1")
        if len(self.scales) > self.iterations:
            _fail("scales", self.scales, f"more scales than iterations ({self.iterations})")
        for name, used in (
            ("init", self.init == "prior"),
            ("prior_resample_every", self.prior_resample_every > 0),
            ("prior_final_passes", self.prior_final_passes > 0),
            ("prior_guidance", self.prior_guidance > 0),
            ("prior_class_guidance", self.prior_class_guidance != 1),
        ):
            if used and not self.prior:
                _fail(name, getattr(self, name), "needs a token transformer: set prior (--prior)")
        if self.prior_candidates > 1 and not (self.init == "prior" or self.redraws):
            _fail(
                "prior_candidates",
                self.prior_candidates,
                "only where the prior draws: with init='prior', prior_resample_every or "
                "prior_final_passes",
            )
        if self.init == "image" and not self.init_image:
            _fail("init_image", self.init_image, "init='image' needs an init image path")

    @property
    def redraws(self) -> bool:
        """Whether the prior redraws tokens during the run (resampling or final passes)."""
        return bool(self.prior_resample_every or self.prior_final_passes)

    def _check_prompts(self) -> None:
        """Prompt syntax errors are reported here, before any model loads."""
        from vqclip.generate.prompts import parse_image_prompts, parse_noise_prompts, parse_prompts
        from vqclip.generate.story import check_schedule, story_parts

        with _blaming("prompts"):
            for text in self.prompts:
                if not text.strip():
                    why = 'a prompt is empty; write some text, e.g. "a lighthouse"'
                    _fail("prompts", text, why)
                for part in story_parts(text):
                    parse_prompts(part)
        counts = [len(story_parts(text)) for text in self.prompts]
        with _blaming("prompt_starts" if self.prompt_starts else "change_prompt_every"):
            check_schedule(self.change_prompt_every, self.prompt_starts, counts)
        with _blaming("image_prompts"):
            for item in self.image_prompts:
                parse_image_prompts(item)
        with _blaming("noise_prompt_seeds"):
            parse_noise_prompts(self.noise_prompt_seeds, self.noise_prompt_weights)

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
    def from_dict(cls, data: Mapping[str, Any]) -> GenerateConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"settings must be a JSON object of option names, got {data!r}")
        unknown = sorted(set(data) - set(OPTION_NAMES))
        if unknown:
            raise ConfigError(
                f"unknown settings {unknown}; known: {sorted(OPTION_NAMES)}", field=unknown[0]
            )
        return cls(**data)


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(GenerateConfig))


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


def declaration(name: str, declared: type = GenerateConfig) -> Mapping[str, Any]:
    """The `option` declaration of field `name`: flags, help, group, choices and bounds."""
    return next(f for f in dataclasses.fields(declared) if f.name == name).metadata


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


def no_prior(value: Any) -> bool:
    """Whether a `prior` setting means none: unset, or `--prior none` (or empty)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))


def pair_defaults(pair: ModelPair, given: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a model pair brings, under the user's `given` ones. A pair whose default
    uses a token prior (the toy pair) brings its prior_* settings only while the prior stays:
    `prior=None` (`--prior none`) alone gives the plain loop, without also undoing each option
    that needs a prior."""
    defaults = dict(pair.defaults)
    if no_prior(given.get("prior", defaults.get("prior"))):
        defaults = {k: v for k, v in defaults.items() if not k.startswith("prior")}
    return defaults


def validate_fields(instance: Any) -> None:
    """Coerce every field of a frozen dataclass declared with `option` to its declared type and
    check its declared range, in place; ConfigError naming the option otherwise."""
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        value = _coerce(f.name, getattr(instance, f.name), hints[f.name])
        _check_range(f, value)
        object.__setattr__(instance, f.name, value)


@contextlib.contextmanager
def _blaming(name: str) -> Iterator[None]:
    """A ConfigError from a parser that does not know which option it reads names `name`."""
    try:
        yield
    except ConfigError as e:
        if e.field is None:
            e.field = name
        raise


def _fail(name: str, value: Any, why: str) -> typing.NoReturn:
    raise ConfigError(f"{name}={value!r}: {why}", field=name)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}s"
        return f"a list of {len(args)} {_describe(args[0])}s"
    if args and type(None) in args:
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or null"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(hint, str(hint))


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """`value` as the declared type (lists become tuples, ints floats where a number is due);
    ConfigError naming the option for anything else, so bad JSON never reaches torch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if args and type(None) in args and origin is not tuple:
        if value is None:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _coerce(name, value, inner)
    if origin is tuple:
        if isinstance(value, str) and args[0] is str and args[-1] is Ellipsis:
            value = (value,)
        if not isinstance(value, list | tuple):
            _fail(name, value, f"expected {_describe(hint)}")
        if args[-1] is not Ellipsis and len(value) != len(args):
            _fail(name, value, f"expected {_describe(hint)}")
        return tuple(_coerce(name, v, args[0]) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            _fail(name, value, "expected true or false")
        return value
    if hint is int:
        if not is_int(value):
            _fail(name, value, "expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(name, value, "expected a number")
        if not math.isfinite(value):
            _fail(name, value, "expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            _fail(name, value, "expected a string")
        return value
    raise TypeError(f"option {name}: undeclared type {hint}")


def _check_range(f: dataclasses.Field, value: Any) -> None:
    meta = f.metadata
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v is None:
            continue
        if meta["choices"] is not None and v not in meta["choices"]:
            _fail(f.name, v, f"choose from {', '.join(meta['choices'])}")
        if meta["low"] is not None and v < meta["low"]:
            _fail(f.name, v, f"must be at least {meta['low']}")
        if meta["above"] is not None and v <= meta["above"]:
            _fail(f.name, v, f"must be greater than {meta['above']}")
        if meta["high"] is not None and v > meta["high"]:
            high = meta["high"]
            _fail(f.name, v, f"must be at most {high if isinstance(high, int) else f'{high:g}'}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
