"""The token prior as a plug-in of the loop (vqclip.generate.extension): a loss term, redraws of
the tokens it finds least likely every `prior_resample_every` steps and in the final passes,
and a start drawn from it (`init="prior"`), each steered by the guides where the prior is a
masked one.

One sampler serves the run (the loss reads a masked prior through it too); it is rebuilt only
when the grid changes (`--scales`). A class-conditional prior reads each image's class: the
`prior_class` given (a number or a name), else, for a prior that names its classes, the class
its prompt names (vqclip.prior.classes), else none. aMUSEd's prior reads the prompt's text
instead: its one "class", label 0, is that text (vqclip.prior.amused_text).
"""

from __future__ import annotations

import typing
import warnings

import torch

from vqclip.errors import ConfigError, VQClipWarning
from vqclip.generate.extension import Extension
from vqclip.prior.amused import AmusedPrior
from vqclip.prior.imagenet import class_index
from vqclip.prior.io import TokenPrior
from vqclip.prior.masked import MaskedModel, MaskedResampler, as_masked_model
from vqclip.prior.options import PriorConfig

if typing.TYPE_CHECKING:
    from vqclip.generate.run import Run

Prior = TokenPrior | MaskedModel
DEFAULT_DRAW_STEPS = 8


def is_masked(prior: Prior) -> bool:
    return not isinstance(prior, TokenPrior) or prior.condition.kind == "masked"


class PriorExtension(Extension):
    """`settings` (the prior's options) carried out with the loaded `prior`."""

    name = "prior"

    def __init__(self, settings: PriorConfig, prior: Prior) -> None:
        self.settings = settings
        self.prior = prior
        self.masked = is_masked(prior)
        self.labels: list[int | None] = []
        self.chosen: list[dict[str, typing.Any]] = []  # per image: how its class was chosen
        self._grid: tuple[int, int] | None = None
        self.sampler = None
        self.loss = None

    # hooks

    def attach(self, run: Run) -> None:
        self._check_levers()
        every, steps = self.settings.prior_resample_every, run.config.iterations
        if every > steps:
            passes = self.settings.prior_final_passes
            after = f"only the {passes} final pass(es) redraw" if passes else "it never redraws"
            warnings.warn(
                f"prior_resample_every={every} is more than the {steps} steps: {after}",
                VQClipWarning,
                stacklevel=2,
            )
        self.labels = self._labels(run)
        self._parts(run)

    def start(self, run: Run) -> torch.Tensor | None:
        """(B, h, w): `prior_candidates` grids drawn per image, the guides' favourite kept."""
        if run.config.init != "prior":
            return None
        sampler = self._parts(run)
        K, (h, w) = self.settings.prior_candidates, run.grid
        everywhere = torch.ones(K, h, w, dtype=torch.bool)
        start = torch.zeros(K, h, w, dtype=torch.long)
        with torch.no_grad():
            return torch.cat(
                [
                    run.best_of(self._redraw(run, sampler, start, everywhere, index=b), b)
                    for b in range(run.config.batch_size)
                ]
            )

    def loss_terms(self, run: Run, z: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.settings
        if not s.prior_weight:
            return {}
        self._parts(run)
        ramp = min(1.0, (run.step_index + 1) / s.prior_ramp) if s.prior_ramp else 1.0
        return {"prior": s.prior_weight * ramp * self.loss(z)}

    def after_step(self, run: Run) -> None:
        every = self.settings.prior_resample_every
        if every and run.step_index % every == 0:
            self.resample(run)

    def after_last(self, run: Run) -> bool:
        for _ in range(self.settings.prior_final_passes):
            self.resample(run)
        return self.settings.prior_final_passes > 0

    def describe(self, index: int) -> dict[str, typing.Any]:
        """What the prior chose for image `index`, for its metadata."""
        return dict(self.chosen[index]) if index < len(self.chosen) else {}

    # parts

    @torch.no_grad()
    def resample(self, run: Run) -> None:
        """Redraw the `prior_resample_fraction` of each image's tokens the prior finds least
        likely; with `prior_candidates` K each image is redrawn K times and the guides keep
        one. A stop asked for meanwhile (`run.check_stop`) cuts the redraw short between its
        rounds; the run then undoes the step it belongs to."""
        run.check_stop()
        sampler = self._parts(run)
        idx = run.tokens()  # (B, h, w)
        labels = self.labels if self.masked else None
        mask = sampler.least_likely(idx, self.settings.prior_resample_fraction, labels)
        mask &= ~run.failed.view(-1, 1, 1)
        K = self.settings.prior_candidates
        if K == 1:
            new = self._redraw(run, sampler, idx, mask, index=None)
        else:  # K redraws of each image, of which the guides keep one
            new = torch.cat(
                [
                    run.best_of(
                        self._redraw(run, sampler, row.repeat(K, 1, 1), m.repeat(K, 1, 1), b), b
                    )
                    for b, (row, m) in enumerate(zip(idx[:, None], mask[:, None], strict=True))
                ]
            )
        run.set_tokens(mask, new)

    def _redraw(self, run: Run, sampler, idx, mask, index: int | None) -> torch.Tensor:
        """The sampler's redraw of `idx` at `mask`; a masked prior's draws are steered by the
        guides and read the class of image `index` for every row, or of image r for row r
        when `index` is None. The run is asked between rounds whether to stop (`check_stop`)."""
        if not self.masked:
            return sampler.redraw(idx, mask, run.rng, between=run.check_stop)
        labels = self.labels if index is None else [self.labels[index]] * len(idx)
        guide = lambda grid: run.prompt_gradient(grid, index)  # noqa: E731
        return sampler.redraw(idx, mask, run.rng, guide, labels, between=run.check_stop)

    def _parts(self, run: Run):
        """The run's sampler (and loss), built for its current grid."""
        if self._grid == run.grid:
            return self.sampler
        from vqclip.prior.loss import PriorLoss

        s, codebook = self.settings, run.vqgan.codebook
        n_codes, self._grid = codebook.shape[0], run.grid
        if self.masked:
            model = as_masked_model(self.prior)
            if not isinstance(self.prior, TokenPrior):  # a large prior runs in the loop's dtype
                model.to(run.device, run.dtype)
            self.sampler = MaskedResampler(
                model,
                n_codes,
                run.grid,
                codebook,
                temperature=s.prior_draw_temperature,
                steps=s.prior_draw_steps,
                guidance=s.prior_guidance,
                class_guidance=s.prior_class_guidance,
                rule=s.prior_sampler,
                gumbel_temperature=s.prior_gumbel_temperature,
                device=run.device,
            )
        else:
            from vqclip.prior.resample import TokenResampler

            self.sampler = TokenResampler(
                self.prior,
                n_codes,
                run.grid,
                label=self._label_given(),
                temperature=s.prior_draw_temperature,
                device=run.device,
            )
        self.loss = None
        if s.prior_weight:
            self.loss = PriorLoss(
                self.prior,
                codebook,
                run.grid,
                temperature=s.prior_temperature,
                label=self._label_given(),
                labels=self.labels if self.masked else None,
                device=run.device,
                sampler=self.sampler if self.masked else None,
            )
        return self.sampler

    # the class

    def _names(self) -> tuple[str, ...]:
        if isinstance(self.prior, TokenPrior):
            return self.prior.condition.class_names
        return self.prior.class_names

    def _n_classes(self) -> int:
        if isinstance(self.prior, TokenPrior):
            return self.prior.condition.n_classes
        return self.prior.n_classes

    def _label_given(self) -> int | None:
        """`prior_class` as a class number (a name looked up among the prior's names)."""
        given = self.settings.prior_class
        if given is None:
            return None
        n = self._n_classes()
        if not n:
            raise ConfigError(
                f"prior_class={given!r}: prior {self._source()} has no classes", field="prior_class"
            )
        names = self._names() or tuple(str(i) for i in range(n))
        return class_index(given, names)

    def _source(self) -> str:
        return self.prior.source

    def _labels(self, run: Run) -> list[int | None]:
        """Each image's class: `prior_class` when given; else, for a masked prior that names
        its classes, the class its prompt names (vqclip.prior.classes); else None. aMUSEd's
        prior: label 0, its prompt's text."""
        if isinstance(self.prior, AmusedPrior):
            return self._prompt_text(run)
        B = run.config.batch_size
        label = self._label_given()
        if label is not None:
            if isinstance(self.prior, TokenPrior):
                self.prior.prefix(1, run.grid, label)  # checks the class, before a step
            self.chosen = [{"prior_class": label, "prior_class_from": "given"}] * B
            return [label] * B
        if not self.masked or not self._names():
            self.chosen = [{}] * B
            return [None] * B
        from vqclip.prior.classes import ClassChooser

        chooser = ClassChooser(self.prior, run.clips, run.config.weights_of_clips, run.device)
        labels = []
        self.chosen = []
        for b in range(B):
            label, note = chooser.choose(run.config.prompt_for(b))
            labels.append(label)
            self.chosen.append(note)
        return labels

    def _prompt_text(self, run: Run) -> list[int | None]:
        """aMUSEd's condition: the prompt's positive text through the prior's text encoder, as
        label 0 of every image, so `prior_class_guidance` is aMUSEd's guidance scale against
        the prompt's negative text (the empty prompt when it has none). The prior holds one
        text, so the batch's prompts must give one."""
        from vqclip.prior.amused_text import negative_text, prompt_text, set_prompt

        if self.settings.prior_class is not None:
            raise ConfigError(
                f"prior_class={self.settings.prior_class!r}: aMUSEd's prior {self._source()} "
                "reads the prompt's text, not a class",
                field="prior_class",
            )
        B = run.config.batch_size
        prompts = [run.config.prompt_for(b) for b in range(B)]
        texts = list(dict.fromkeys((prompt_text(p), negative_text(p)) for p in prompts))
        if len(texts) > 1:
            raise ConfigError(
                f"aMUSEd's prior {self._source()} holds one text for the whole batch, but the "
                f"batch's prompts give {len(texts)}: "
                f"{', '.join(repr(t) + (f' (not {n!r})' if n else '') for t, n in texts)}; give "
                "every image the same text prompts, or run one batch per prompt",
                field="prompts",
            )
        if self.prior.text_encoder is None:
            raise ConfigError(
                f"aMUSEd's prior {self._source()} came without its text encoder: load it by its "
                "registry name (amused_256, amused_512)"
            )
        text, negative = texts[0]
        set_prompt(self.prior, self.prior.text_encoder, text, negative)
        note: dict[str, typing.Any] = {"prior_text": text}
        if negative:
            note["prior_negative_text"] = negative
        self.chosen = [note] * B
        return [0] * B

    def _check_levers(self) -> None:
        """Options that only a masked prior reads are refused with a causal one, where they
        would change nothing."""
        if self.masked:
            return
        s = self.settings
        for name, used in (
            ("prior_guidance", s.prior_guidance > 0),
            ("prior_class_guidance", s.prior_class_guidance != 1),
            ("prior_draw_steps", s.prior_draw_steps != DEFAULT_DRAW_STEPS),
            ("prior_sampler", s.prior_sampler != "vqclip"),
        ):
            if used:
                raise ConfigError(
                    f"{name}={getattr(s, name)!r}: only a masked prior reads it; prior "
                    f"{self._source()} is a causal (taming) transformer, which draws tokens one "
                    "by one in raster order",
                    field=name,
                )


def extensions_for(settings, prior: Prior | None = None, loader=None) -> list[Extension]:
    """The plug-ins `settings` (a `GenerateConfig`) asks for: its token prior, loaded by name
    through `loader` (a `ModelCache`'s, or `load_prior_by_name`) unless given."""
    options = PriorConfig.of(settings)
    if not options.prior:
        return []
    if prior is None:
        from vqclip.prior.resolve import load_prior_by_name

        prior = (loader or load_prior_by_name)(options.prior, options.prior_config)
    return [PriorExtension(options, prior)]
