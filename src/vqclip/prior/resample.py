"""Prior-guided token resampling: the tokens a token transformer finds least likely are redrawn
from it, given the tokens before them (taming's sampling, applied to a few positions).

A token's surprisal is -log p(token | the conditioning prefix and the tokens before it in raster
order), read off one forward pass of the (causal) transformer. The `fraction` of each image's
tokens with the highest surprisal are redrawn one after another in raster order, each from
the prior's prediction given the tokens before it (already redrawn ones included), so a
redrawn token follows what the prior expects after its context: a stray fragment after a
plain background is mostly redrawn as background. Grids larger than the transformer's block are
handled in the windows the prior loss uses (vqclip.prior.windows.prior_window): a token belongs
to the first window, in raster order, that covers it. The same routine with every token
chosen draws a whole grid from the prior (a start the prior agrees with).

Every random draw comes from the `torch.Generator` passed in, so a seed gives the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vqclip.errors import ConfigError
from vqclip.prior.io import TokenPrior
from vqclip.prior.windows import GridSampler, prior_window


class TokenResampler(GridSampler):
    """Scores and redraws (B, h, w) grids of code indices of a VQGAN with `n_codes` codes under
    `prior`; `label` is the class of a class-conditional prior; draws are from the prior's
    prediction at `temperature` (below 1: the likelier tokens more often)."""

    def __init__(
        self,
        prior: TokenPrior,
        n_codes: int,
        grid: tuple[int, int],
        *,
        label: int | None = None,
        temperature: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> None:
        if not temperature > 0:
            raise ConfigError(f"draw temperature={temperature!r}: must be above 0")
        gpt = prior.transformer
        if gpt.config.vocab_size < n_codes:
            raise ConfigError(
                f"prior {prior.source} knows {gpt.config.vocab_size} tokens but the VQGAN has "
                f"{n_codes} codes: it was trained for another VQGAN"
            )
        self.gpt = gpt.to(device)
        self.n_codes = n_codes
        self.grid = grid
        self.window = prior_window(prior, grid)
        self.prefix = prior.prefix(1, self.window, label).to(device)  # (1, P)
        self.device = torch.device(device)
        self.temperature = temperature

    def _log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n, K) log p of each image code at each of the n positions of `tokens` (B, n),
        given the prefix and the tokens before it; image codes only, renormalised."""
        prefix = self.prefix.expand(tokens.shape[0], -1)
        logits = self.gpt(torch.cat([prefix, tokens[:, :-1]], dim=1))
        return F.log_softmax(logits[:, prefix.shape[1] - 1 :, : self.n_codes].float(), dim=-1)

    @torch.no_grad()
    def surprisal(self, idx: torch.Tensor, labels=None) -> torch.Tensor:
        """(B, h, w) nats: -log p of each token of `idx` (B, h, w) given the tokens before it in
        the first window that covers it. The class is the sampler's own (`label`); per-row
        `labels` are for masked priors."""
        if labels is not None:
            raise ConfigError("per-image prior classes need a masked prior")
        self._check(idx)
        idx = idx.to(self.device)
        (wh, ww), B = self.window, idx.shape[0]
        out = torch.full(idx.shape, float("nan"), device=self.device)
        for y, x in self._windows():
            tokens = idx[:, y : y + wh, x : x + ww].reshape(B, -1)  # (B, n)
            nll = -self._log_probs(tokens).gather(-1, tokens[..., None])[..., 0]  # (B, n)
            view = out[:, y : y + wh, x : x + ww]
            view.copy_(torch.where(view.isnan(), nll.view(B, wh, ww), view))
        return out

    @torch.no_grad()
    def redraw(
        self,
        idx: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator,
        *,
        between: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """A copy of `idx` (B, h, w) with the tokens where `mask` (B, h, w) is True drawn from the
        prior one by one in raster order (window by window), each given the tokens before it.
        Tokens outside `mask` are never changed. `generator` is a CPU generator; `between()` is
        called before each token (a run's `check_stop`, which may raise to give the draw up)."""
        self._check(idx)
        if mask.shape != idx.shape:
            raise ConfigError(f"resample mask of shape {tuple(mask.shape)}; expected {idx.shape}")
        out = idx.to(self.device).clone()
        todo = mask.to(self.device, torch.bool).clone()
        wh, ww = self.window
        for y, x in self._windows():
            chosen = todo[:, y : y + wh, x : x + ww].flatten(1).clone()  # (B, n)
            todo[:, y : y + wh, x : x + ww] = False  # drawn in this window, not again
            images = chosen.any(1).nonzero().flatten()
            if not len(images):
                continue
            chosen = chosen[images]  # (b, n)
            tokens = out[images, y : y + wh, x : x + ww].flatten(1)  # (b, n)
            # Token by token with the transformer's key-value cache: position t's prediction
            # reads the tokens before it, redrawn ones included.
            logits, past = self.gpt.extend(self.prefix.expand(len(images), -1))
            for t in range(int(chosen.nonzero()[:, 1].max()) + 1):
                if between is not None:
                    between()
                if t:
                    logits, past = self.gpt.extend(tokens[:, t - 1 : t], past)
                rows = chosen[:, t].nonzero().flatten()
                if len(rows):
                    logit = logits[rows, -1, : self.n_codes].float() / self.temperature
                    p = F.softmax(logit, dim=-1)  # (r, K)
                    drawn = torch.multinomial(p.cpu(), 1, generator=generator)[:, 0]
                    tokens[rows, t] = drawn.to(self.device)
            out[images, y : y + wh, x : x + ww] = tokens.view(-1, wh, ww)
        return out

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, h, w) codes drawn from the prior: every token redrawn."""
        idx = torch.zeros(batch, *self.grid, dtype=torch.long)
        return self.redraw(idx, torch.ones_like(idx, dtype=torch.bool), generator)
