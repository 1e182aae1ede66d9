"""The token prior's options, declared once beside the loop's (`GenerateConfig` composes both):
the CLI, the web form, batch specs and PNG metadata read them as they read the others.

The first group holds what a user touches (which prior, its class, how much it weighs and how
often it redraws); the tuning knobs sit in a group of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vqclip.declare import fail, option, option_names, validate_fields

MAIN = "prior"
TUNING = "prior tuning"
SAMPLERS = ("vqclip", "maskgit", "amused")


def no_prior(value: Any) -> bool:
    """Whether a `prior` setting means none: unset, or `--prior none` (or empty)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))


@dataclass(frozen=True)
class PriorConfig:
    """A token prior in the loop: a loss term, redraws of the tokens it finds least likely, a
    start drawn from it (`init="prior"`), and the final clean-up passes."""

    prior: str | None = option(
        None,
        "--prior",
        help="a token prior that redraws the tokens it finds least likely and may weigh in the "
        "loss: a masked prior (MaskGIT: maskgit_imagenet_256; aMUSEd, told the prompt's text: "
        "amused_256; the toy pair's toy_shape_prior), "
        "a taming Net2NetTransformer .ckpt or a registry name whose file holds one (faceshq); "
        "none: the plain loop",
        group=MAIN,
        metavar="NAME",
        refers="model",
    )
    prior_class: int | str | None = option(
        None,
        "--prior-class",
        help="the class of a class-conditional prior, as a number or a name (MaskGIT: an "
        "ImageNet class, 0-999); when not given, a prior that names its classes takes each "
        "image's class from its prompt (the class CLIP finds nearest); aMUSEd reads the "
        "prompt's text instead",
        group=MAIN,
        low=0,
        metavar="CLASS",
    )
    prior_weight: float = option(
        1.0,
        "--prior-weight",
        help="weight of the prior's loss (nats per token; 0: the prior only redraws)",
        group=MAIN,
        low=0,
        high=1e6,
        metavar="W",
    )
    prior_resample_every: int = option(
        0,
        "--prior-resample-every",
        help="every N steps (the last one too when N divides the steps), redraw the tokens "
        "the prior finds least likely (0: never)",
        group=MAIN,
        low=0,
        high=10**7,
        metavar="N",
    )
    prior_final_passes: int = option(
        0,
        "--prior-final-passes",
        help="after the last step, redraw the least likely tokens N more times: cleans up what "
        "the loop painted since the last redraw (0: none)",
        group=MAIN,
        low=0,
        high=64,
        metavar="N",
    )
    prior_config: str | None = option(
        None,
        "--prior-config",
        help="taming YAML of a --prior .ckpt given by path (default: the .yaml beside it)",
        group=TUNING,
        metavar="YAML",
        refers="file",
    )
    prior_resample_fraction: float = option(
        0.1,
        "--prior-resample-fraction",
        help="share of each image's tokens redrawn at each redraw: those the prior finds least "
        "likely",
        group=TUNING,
        above=0,
        high=1,
        metavar="F",
    )
    prior_guidance: float = option(
        0.0,
        "--prior-guidance",
        help="with a masked prior: how strongly the guides steer its draws; each token's "
        "logits gain the guides' first-order loss fall for that code, in units of its spread "
        "over the image (0: the prior alone)",
        group=TUNING,
        low=0,
        high=1000,
        metavar="G",
    )
    prior_class_guidance: float = option(
        1.0,
        "--prior-class-guidance",
        help="with a class-conditional masked prior: its logits with the class minus without, "
        "times S, added to those without (classifier-free guidance; 1: the class's own "
        "prediction, above 1 the class counts more, 0 ignores it); aMUSEd: the prompt's text "
        "against the empty prompt, S its guidance scale",
        group=TUNING,
        low=0,
        high=100,
        metavar="S",
    )
    prior_draw_steps: int = option(
        8,
        "--prior-draw-steps",
        help="with a masked prior: rounds in which the drawn tokens are filled in",
        group=TUNING,
        low=1,
        high=256,
        metavar="N",
    )
    prior_draw_temperature: float = option(
        1.0,
        "--prior-draw-temperature",
        help="temperature of the tokens drawn from the prior; below 1 the likelier tokens are "
        "drawn more often",
        group=TUNING,
        above=0,
        high=100,
        metavar="T",
    )
    prior_sampler: str = option(
        "vqclip",
        "--prior-sampler",
        help="how a masked prior fills the tokens it draws: vqclip: a random order on a cosine "
        "schedule, steered by the guides; maskgit: its authors' rule (the most confident draws "
        "first with Gumbel noise that falls over the rounds, an arccos schedule, class guidance "
        "that grows over the rounds); amused: aMUSEd's (the most confident first with Gumbel "
        "noise falling from 2 to 0, a cosine schedule)",
        group=TUNING,
        choices=SAMPLERS,
    )
    prior_gumbel_temperature: float = option(
        4.5,
        "--prior-gumbel-temperature",
        help="with --prior-sampler maskgit: the temperature of the Gumbel noise on the draws' "
        "confidence at the first round (it falls to 0 at the last); MaskGIT's own 4.5 at 256 px, "
        "7 at 512",
        group=TUNING,
        low=0,
        high=1000,
        metavar="T",
    )
    prior_candidates: int = option(
        1,
        "--prior-candidates",
        help="wherever the prior draws (the start with --init prior, each redraw): draw K grids "
        "per image and keep the one the guides like best for its prompt",
        group=TUNING,
        low=1,
        high=4096,
        metavar="K",
    )
    prior_ramp: int = option(
        0,
        "--prior-ramp",
        help="steps over which the prior's loss weight rises from 0 (the guides set colours first)",
        group=TUNING,
        low=0,
        high=10**7,
        metavar="N",
    )
    prior_temperature: float = option(
        1.0,
        "--prior-temperature",
        help="softness of the latent's code assignment the prior's loss scores, in units of the "
        "codebook's mean squared nearest-neighbour distance",
        group=TUNING,
        above=0,
        high=1e6,
        metavar="T",
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        self._normalise_prior()
        self._check_prior(init=None)

    def _normalise_prior(self) -> None:
        if self.prior is not None and no_prior(self.prior):
            object.__setattr__(self, "prior", None)
        label = self.prior_class
        if isinstance(label, str) and label.strip().isdigit():
            object.__setattr__(self, "prior_class", int(label))
        elif isinstance(label, str) and not label.strip():
            fail("prior_class", label, "give a class number or name")

    def _check_prior(self, init: str | None) -> None:
        """The prior's options that need a prior, and candidates only where the prior draws
        (`init` is the loop's; None when the prior's options stand alone)."""
        for name, used in (
            ("init", init == "prior"),
            ("prior_resample_every", self.prior_resample_every > 0),
            ("prior_final_passes", self.prior_final_passes > 0),
            ("prior_guidance", self.prior_guidance > 0),
            ("prior_class_guidance", self.prior_class_guidance != 1),
            ("prior_class", self.prior_class is not None),
            ("prior_sampler", self.prior_sampler != "vqclip"),
        ):
            if used and not self.prior:
                value = init if name == "init" else getattr(self, name)
                fail(name, value, "needs a token prior: set prior (--prior)")
        if self.prior_gumbel_temperature != 4.5 and self.prior_sampler != "maskgit":
            fail(
                "prior_gumbel_temperature",
                self.prior_gumbel_temperature,
                "only --prior-sampler maskgit reads it",
            )
        if init is not None and self.prior_candidates > 1 and not (init == "prior" or self.redraws):
            fail(
                "prior_candidates",
                self.prior_candidates,
                "only where the prior draws: with init='prior', prior_resample_every or "
                "prior_final_passes",
            )

    @property
    def redraws(self) -> bool:
        """Whether the prior redraws tokens during the run (resampling or final passes)."""
        return bool(self.prior_resample_every or self.prior_final_passes)

    @classmethod
    def of(cls, settings: Any) -> PriorConfig:
        """The prior's options of `settings` (a `GenerateConfig`, which holds them)."""
        return cls(**{name: getattr(settings, name) for name in PRIOR_OPTION_NAMES})


PRIOR_OPTION_NAMES = option_names(PriorConfig)
