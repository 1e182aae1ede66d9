"""Masked (bidirectional) token priors: scoring and redrawing tokens given their neighbours on
every side, as MaskGIT draws.

A masked prior (`Condition("masked")`) is the GPT of `vqclip.prior.transformer` with every
position seeing every other, trained to predict the tokens at positions holding its mask token
from the rest. Unlike a causal prior it can say how well a token fits the tokens around it, not
only those above and to its left, and redraw a stray fragment as what its surroundings call for.

- `log_probs`: log p(token at i | the others) for every position, from four passes, each masking
  one of the 2x2 interleaved quarters of the grid (every masked position still sees its eight
  neighbours), so a token is never scored by a pass that shows it.
- `redraw`: the chosen positions are masked and filled in `steps` rounds; each round draws a
  token for every position still masked and keeps a random share of them (a cosine schedule:
  few at first, then more), so early tokens shape what later ones are drawn given. MaskGIT's
  own rule (`rule="maskgit"`) keeps the most confident draws first, with Gumbel noise that falls
  over the rounds, on an arccos schedule; a prior whose likeliest token is background fills the
  grid with background first that way and leaves the object's tokens to the end, which is why
  the random order is the default (research/toy-log.md). aMUSEd's rule (`rule="amused"`,
  diffusers' AmusedScheduler) also keeps the most confident first, with Gumbel noise falling
  from 2 to 0, on its cosine schedule.
- Guidance: with `guide` (a function of a (B, h, w) code grid returning the gradient of the
  guides' loss with respect to the latent, (B, C, h, w)), each round adds to the logits of token
  k at position i the first-order fall of the loss when that position shows code e_k,
  -g_i . e_k, scaled to unit spread over the image and times `guidance`: the draw prefers codes
  that move the picture toward the prompt, among those the prior finds plausible there.

Grids larger than the prior's square window are handled window by window (the windows of
`vqclip.prior.windows.window_starts`). A grid smaller than the window (a small image, or the
coarse stage of `--scales`) is read at the window's centre with mask tokens around it: the
prior sees the picture as the middle of one of its training grids whose rest is unknown, and
never draws there. Every random draw comes from the `torch.Generator` passed in.

A class-conditional masked prior (`Condition.n_classes` above 0) reads a class token before the
grid: `labels` gives each row's class (None: the unknown class, which such a prior is trained
to draw without), so one batch may hold pictures of different classes. `class_guidance` S
scales the class's pull as classifier-free guidance does: the logits without the class plus S
times the change the class makes (one more pass of the transformer per round).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from vqclip.errors import ConfigError
from vqclip.prior.amused import amused_confidence, amused_left
from vqclip.prior.io import TokenPrior
from vqclip.prior.maskgit import arccos_schedule, gumbel_confidence
from vqclip.prior.windows import GridSampler

Guide = Callable[[torch.Tensor], torch.Tensor]
Labels = Sequence[int | None] | None  # each row's class; None: no class (or unknown) for all
RULES = ("vqclip", "maskgit", "amused")


def masked_window(prior: TokenPrior) -> tuple[int, int]:
    """The square window a masked prior was trained on (its block, less a class token, as a
    square)."""
    block = prior.transformer.config.block_size - prior.prefix_length((0, 0))
    side = math.isqrt(block)
    if side * side != block:
        raise ConfigError(
            f"masked prior {prior.source}: block_size {prior.transformer.config.block_size} "
            f"holds {block} grid tokens, not a square grid"
        )
    return side, side


class MaskedModel(Protocol):
    """What the masked sampler reads of a masked token model: the codes it predicts
    (`n_codes`, below `mask_token`), the square `window` of tokens it reads at once, its
    classes (`class_names` when it knows them), and `logits`."""

    source: str
    n_codes: int
    mask_token: int
    window: tuple[int, int]
    n_classes: int
    class_names: tuple[str, ...]

    def logits(self, tokens: torch.Tensor, labels: Sequence[int | None]) -> torch.Tensor:
        """(B, n, n_codes) float logits of tokens (B, n) of one window (the mask token where
        unknown), each row told its class (None: no class, or the class unknown)."""
        ...

    def to(self, device: torch.device | str) -> MaskedModel: ...


class PrefixMaskedModel:
    """vqclip's own masked priors (`Condition("masked")`, e.g. the toy priors): the GPT of
    vqclip.prior.transformer read bidirectionally, a class token before the grid (class c is
    token `mask_token + 1 + c`; the mask token there stands for an unknown class)."""

    def __init__(self, prior: TokenPrior) -> None:
        c = prior.condition
        if c.kind != "masked":
            raise ConfigError(f"prior {prior.source} is not a masked prior")
        self.prior = prior
        self.source = prior.source
        self.mask_token = c.mask_token
        self.n_codes = c.mask_token  # the tokens below the mask token are codes
        self.n_classes = c.n_classes
        self.class_names = c.class_names
        self.window = masked_window(prior)
        if not self.mask_token < prior.transformer.config.vocab_size:
            raise ConfigError(
                f"prior {prior.source}: mask token {self.mask_token} is outside its "
                f"{prior.transformer.config.vocab_size} tokens"
            )

    def to(self, device: torch.device | str) -> PrefixMaskedModel:
        self.prior.transformer.to(device)
        return self

    def logits(self, tokens: torch.Tensor, labels: Sequence[int | None]) -> torch.Tensor:
        rows = [self.prior.prefix(1, self.window, label) for label in labels]
        prefix = torch.cat(rows).to(tokens.device)  # (B, P)
        P = prefix.shape[1]
        out = self.prior.transformer(torch.cat([prefix, tokens], 1))[:, P:, : self.n_codes]
        return out.float()


def as_masked_model(prior: TokenPrior | MaskedModel) -> MaskedModel:
    """A masked model as the sampler reads it (vqclip's own priors wrapped)."""
    if isinstance(prior, TokenPrior):
        return PrefixMaskedModel(prior)
    return prior


class MaskedResampler(GridSampler):
    """Scores and redraws (B, h, w) grids of a VQGAN with `n_codes` codes under a masked prior;
    draws at `temperature`, in `steps` rounds, with `guidance` times the guides' pull."""

    def __init__(
        self,
        prior: TokenPrior | MaskedModel,
        n_codes: int,
        grid: tuple[int, int],
        codebook: torch.Tensor,
        *,
        temperature: float = 1.0,
        steps: int = 8,
        guidance: float = 0.0,
        class_guidance: float = 1.0,
        rule: str = "vqclip",
        gumbel_temperature: float = 4.5,
        device: torch.device | str = "cpu",
    ) -> None:
        model = as_masked_model(prior)
        if rule not in RULES:
            raise ConfigError(f"draw rule {rule!r}: choose from {', '.join(RULES)}")
        if not temperature > 0:
            raise ConfigError(f"draw temperature={temperature!r}: must be above 0")
        if steps < 1:
            raise ConfigError(f"draw steps={steps!r}: must be at least 1")
        self.mask_token = model.mask_token
        if n_codes > model.n_codes:
            raise ConfigError(
                f"prior {model.source} predicts {model.n_codes} codes but the VQGAN has "
                f"{n_codes}: it was trained for another VQGAN"
            )
        self.model = model.to(device)
        self.n_codes = n_codes
        self.grid = grid
        self.window = model.window
        # A grid smaller than the window sits at its centre, mask tokens around it.
        self.padded = (max(grid[0], self.window[0]), max(grid[1], self.window[1]))
        self.offset = ((self.padded[0] - grid[0]) // 2, (self.padded[1] - grid[1]) // 2)
        self.codebook = codebook.detach().float().to(device)
        self.temperature = temperature
        self.steps = steps
        self.rule = rule
        self.gumbel_temperature = gumbel_temperature
        self.guidance = guidance
        self.class_guidance = class_guidance
        self.device = torch.device(device)

    def _pad(self, grid: torch.Tensor, fill: float | bool) -> torch.Tensor:
        """(B, h, w, ...) -> (B, *padded, ...), `fill` around the grid."""
        if self.padded == self.grid:
            return grid
        out = grid.new_full((grid.shape[0], *self.padded, *grid.shape[3:]), fill)
        (y, x), (h, w) = self.offset, self.grid
        out[:, y : y + h, x : x + w] = grid
        return out

    def _crop(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, *padded, ...) -> (B, h, w, ...): the grid's own positions."""
        (y, x), (h, w) = self.offset, self.grid
        return padded[:, y : y + h, x : x + w]

    def _labels(self, labels: Labels, batch: int) -> list[int | None]:
        """Each row's class (None: no class)."""
        if labels is None:
            labels = [None] * batch
        if len(labels) != batch:
            raise ConfigError(f"{len(labels)} prior classes for {batch} token grids")
        if not self.model.n_classes and any(label is not None for label in labels):
            raise ConfigError(f"prior {self.model.source} has no classes: leave prior_class unset")
        return list(labels)

    def _logits(
        self, tokens: torch.Tensor, labels: list[int | None], scale: float | None = None
    ) -> torch.Tensor:
        """(B, n, K) logits over image codes for tokens (B, n) of one window, each row told its
        class; with a class guidance S (`scale`, default `class_guidance`) other than 1,
        free + S (cond - free), where `free` are the logits without a class (classifier-free
        guidance)."""
        scale = self.class_guidance if scale is None else scale
        logits = self.model.logits(tokens, labels)[..., : self.n_codes].float()
        if scale == 1 or not self.model.n_classes:
            return logits
        free = self.model.logits(tokens, [None] * len(labels))[..., : self.n_codes].float()
        return free + scale * (logits - free)

    def _class_scale(self, s: int) -> float:
        """The class guidance of round `s`: constant, or with MaskGIT's rule growing linearly
        from 1 (the class's own prediction) at the first round to `class_guidance` at the
        last, as their (1 + w') c - w' u with w' rising from 0 to w."""
        if self.rule != "maskgit" or self.steps < 2:
            return self.class_guidance
        return 1 + (self.class_guidance - 1) * s / (self.steps - 1)

    def _left(self, total: torch.Tensor, remaining: torch.Tensor, s: int) -> torch.Tensor:
        """(B, 1): tokens of each row left masked after round `s` of the draw, of its `total`
        masked at the start and `remaining` (B, 1) still masked: a cosine schedule, aMUSEd's
        (the same cosine, keeping at least one draw a round and one token for the last), or
        MaskGIT's arccos one (their counts per round, for each row's total)."""
        if self.rule == "amused":
            return amused_left(total, remaining, s, self.steps)
        if self.rule != "maskgit":
            return (total * math.cos(math.pi / 2 * (s + 1) / self.steps)).floor()
        if s + 1 >= self.steps:
            return torch.zeros_like(total)
        left = []
        for t in total.flatten().tolist():
            counts = arccos_schedule(int(t), self.steps) if t >= 1 else [0] * self.steps
            left.append(max(0, int(t) - sum(counts[: s + 1])))
        return torch.tensor(left, dtype=total.dtype, device=total.device).view_as(total)

    def _window_log_probs(self, tokens: torch.Tensor, labels: list[int | None]) -> torch.Tensor:
        """(B, wh, ww, K) log p of each position's code given the others, for tokens (B, wh, ww)."""
        out = torch.empty(*tokens.shape, self.n_codes, device=self.device)
        for dy in (0, 1):
            for dx in (0, 1):
                quarter = torch.zeros(tokens.shape[1:], dtype=torch.bool, device=self.device)
                quarter[dy::2, dx::2] = True
                masked = torch.where(quarter, self.mask_token, tokens)
                logits = self._logits(masked.flatten(1), labels)
                lp = F.log_softmax(logits, dim=-1).view(out.shape)
                out[:, quarter] = lp[:, quarter]
        return out

    def log_probs(self, idx: torch.Tensor, labels: Labels = None) -> torch.Tensor:
        """(B, h, w, K): log p(code at each position | the tokens around it, the row's class), in
        the first window (raster order) that covers the position. Differentiable in nothing:
        tokens are indices."""
        self._check(idx)
        labels = self._labels(labels, idx.shape[0])
        idx = self._pad(idx.to(self.device), self.mask_token)
        wh, ww = self.window
        out = torch.empty(*idx.shape, self.n_codes, device=self.device)
        done = torch.zeros(idx.shape[1:], dtype=torch.bool, device=self.device)
        for y, x in self._windows(self.padded):
            lp = self._window_log_probs(idx[:, y : y + wh, x : x + ww], labels)
            new = ~done[y : y + wh, x : x + ww]
            out[:, y : y + wh, x : x + ww][:, new] = lp[:, new]
            done[y : y + wh, x : x + ww] = True
        return self._crop(out)

    @torch.no_grad()
    def surprisal(self, idx: torch.Tensor, labels: Labels = None) -> torch.Tensor:
        """(B, h, w) nats: -log p of each token of `idx` given the tokens around it."""
        lp = self.log_probs(idx, labels)
        return -lp.gather(-1, idx.to(self.device)[..., None])[..., 0]

    def _guide_bias(self, grid: torch.Tensor, guide: Guide) -> torch.Tensor:
        """(B, h, w, K): -g_i . e_k, scaled to unit spread per image, times `guidance`."""
        with torch.enable_grad():
            g = guide(grid).detach().float().to(self.device)  # (B, C, h, w)
        d = g.permute(0, 2, 3, 1) @ self.codebook.t()  # (B, h, w, K): loss change per code
        d = d - d.mean(-1, keepdim=True)
        spread = d.flatten(1).std(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
        return -self.guidance * d / spread

    @torch.no_grad()
    def redraw(
        self,
        idx: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator,
        guide: Guide | None = None,
        labels: Labels = None,
        *,
        between: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """A copy of `idx` (B, h, w) with the tokens where `mask` is True drawn from the prior
        given the others (and each row's class, `labels`), window by window; tokens outside
        `mask` never change. `generator` is a CPU generator; `guide` (used when `guidance` is
        not 0) steers the draws; `between()` is called before each round (a run's
        `check_stop`, which may raise to give the draw up)."""
        self._check(idx)
        if mask.shape != idx.shape:
            raise ConfigError(f"resample mask of shape {tuple(mask.shape)}; expected {idx.shape}")
        labels = self._labels(labels, idx.shape[0])
        out = self._pad(idx.to(self.device), self.mask_token).clone()
        todo = self._pad(mask.to(self.device, torch.bool), False).clone()
        wh, ww = self.window
        guided = guide is not None and self.guidance != 0
        for y, x in self._windows(self.padded):
            chosen = todo[:, y : y + wh, x : x + ww].flatten(1).clone()  # (B, n)
            todo[:, y : y + wh, x : x + ww] = False
            if not chosen.any():
                continue
            tokens = out[:, y : y + wh, x : x + ww].flatten(1).clone()  # (B, n)
            tokens[chosen] = self.mask_token
            remaining = chosen.clone()
            total = chosen.sum(1, keepdim=True).float()  # (B, 1)
            for s in range(self.steps):
                if between is not None:
                    between()
                logits = self._logits(tokens, labels, self._class_scale(s)) / self.temperature
                if guided:
                    # A tentative grid (the prior's own draw where still masked) to take the
                    # guides' gradient at.
                    tentative = self._draw(logits, generator)
                    full = out.clone()
                    filled = torch.where(remaining, tentative, tokens)
                    full[:, y : y + wh, x : x + ww] = filled.view(-1, wh, ww)
                    # zero around a small grid, where nothing is drawn
                    bias = self._pad(self._guide_bias(self._crop(full), guide), 0.0)
                    bias = bias[:, y : y + wh, x : x + ww]
                    logits = logits + bias.flatten(1, 2)
                drawn = self._draw(logits, generator)  # (B, n)
                conf = torch.where(remaining, self._order(logits, drawn, s, generator), -math.inf)
                n_remaining = remaining.sum(1, keepdim=True)  # (B, 1)
                commit_n = n_remaining - self._left(total, n_remaining, s)  # (B, 1)
                rank = conf.argsort(1, descending=True).argsort(1)
                commit = remaining & (rank < commit_n)
                tokens = torch.where(commit, drawn, tokens)
                remaining &= ~commit
            out[:, y : y + wh, x : x + ww] = tokens.view(-1, wh, ww)
        return self._crop(out)

    def _order(
        self, logits: torch.Tensor, drawn: torch.Tensor, s: int, generator: torch.Generator
    ) -> torch.Tensor:
        """(B, n): which draws are kept first. vqclip's rule: a random order (with the toy
        prior, keeping the most confident fills the grid with background first); MaskGIT's:
        the drawn token's log-probability plus Gumbel noise whose temperature falls linearly to
        none at the last round; aMUSEd's: the same from 2, on its probabilities (as theirs)."""
        if self.rule == "amused":
            p = F.softmax(logits, dim=-1).gather(-1, drawn[..., None])[..., 0]
            return amused_confidence(p, s, self.steps, generator)
        if self.rule != "maskgit":
            return torch.rand(drawn.shape, generator=generator).to(self.device)
        log_p = F.log_softmax(logits, dim=-1).gather(-1, drawn[..., None])[..., 0]
        if self.steps < 2:
            return log_p.double()
        return gumbel_confidence(log_p, s, self.steps, self.gumbel_temperature, generator)

    def _draw(self, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        p = F.softmax(logits, dim=-1).flatten(0, 1).cpu()
        return torch.multinomial(p, 1, generator=generator).view(logits.shape[:2]).to(self.device)

    def sample(
        self,
        batch: int,
        generator: torch.Generator,
        guide: Guide | None = None,
        labels: Labels = None,
    ) -> torch.Tensor:
        """(batch, h, w) codes drawn from the prior: every token drawn."""
        idx = torch.zeros(batch, *self.grid, dtype=torch.long)
        return self.redraw(idx, torch.ones_like(idx, dtype=torch.bool), generator, guide, labels)
