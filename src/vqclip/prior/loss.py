"""The prior loss: how likely a token transformer finds the loop's current latent grid.

The loop's latent z is continuous; the decoder sees its nearest codes. To score z with a model of
token sequences and still get a gradient, each latent vector becomes a soft code assignment
p = softmax(-||z - e_k||^2 / (T * s)) over the codebook (s: the codebook's mean squared distance
between nearest neighbours, so a temperature T means the same for every VQGAN).

The transformer reads the tokens the decoder shows (z's nearest
codes) after its conditioning prefix, frozen and not differentiated, and predicts each next
token; the loss is the cross-entropy of each soft assignment under that prediction, in nats per
token, so each latent vector is pulled toward the codes the prior expects after the actual
tokens before it. It is low for token layouts like the training images' and high for, say, an
isolated token of object colour in a background, which is what the guides alone accept.

Grids with more tokens than the transformer's block are scored in windows of at most a block
(16x16 for taming's 256-token models, as taming samples large images), tiled with the last
window flush with the edge, the windows averaged.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vqclip.errors import ConfigError
from vqclip.prior.io import TokenPrior
from vqclip.prior.windows import prior_window, window_starts

if typing.TYPE_CHECKING:
    from vqclip.prior.masked import MaskedResampler


def nearest_neighbour_scale(codebook: torch.Tensor) -> float:
    """Mean squared distance from each code to its nearest other code (the temperature's unit)."""
    e = codebook.detach().float()
    d = torch.cdist(e, e).pow(2)
    d.fill_diagonal_(float("inf"))
    scale = float(d.min(dim=1).values.mean())
    return scale if scale > 0 else 1.0


def soft_assignment(z: torch.Tensor, codebook: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, h, w, K): softmax over codes of -||z - e_k||^2 / temperature, for z (B, C, h, w)."""
    flat = z.permute(0, 2, 3, 1).float()  # (B, h, w, C)
    e = codebook.float()
    dist = (flat * flat).sum(-1, keepdim=True) - 2 * flat @ e.t() + (e * e).sum(-1)
    return F.softmax(-dist / temperature, dim=-1)


class PriorLoss:
    """Scores latents (B, C, h, w) under `prior`; `label` is the class of a class-conditional
    prior, `labels` (a masked prior's) each image's class where they differ. Call it for the
    (B,) loss; the transformer stays frozen. A masked prior is read through `sampler` (the
    run's one `MaskedResampler`; one is built when not given)."""

    def __init__(
        self,
        prior: TokenPrior,
        codebook: torch.Tensor,
        grid: tuple[int, int],
        *,
        temperature: float = 1.0,
        label: int | None = None,
        labels: Sequence[int | None] | None = None,
        device: torch.device | str = "cpu",
        sampler: MaskedResampler | None = None,
    ) -> None:
        n_codes = codebook.shape[0]
        self.masked = None
        if getattr(prior, "condition", None) is None or prior.condition.kind == "masked":
            # A masked prior predicts each token from the tokens around it (four passes).
            from vqclip.prior.masked import MaskedResampler

            self.masked = sampler or MaskedResampler(prior, n_codes, grid, codebook, device=device)
        else:
            gpt = prior.transformer
            if gpt.config.vocab_size < n_codes:
                raise ConfigError(
                    f"prior {prior.source} knows {gpt.config.vocab_size} tokens but the VQGAN "
                    f"has {n_codes} codes: it was trained for another VQGAN"
                )
            self.gpt = gpt.to(device)
            self.window = prior_window(prior, grid)
            self.prefix = prior.prefix(1, self.window, label).to(device)  # (1, P)
        self.codebook = codebook.detach().float().to(device)
        self.temperature = temperature * nearest_neighbour_scale(self.codebook)
        self.labels = labels
        self.label = label

    def _tiles(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, ...) -> (windows * B, wh * ww, ...), windows in raster order."""
        wh, ww = self.window
        h, w = x.shape[1:3]
        tiles = [
            x[:, y : y + wh, x0 : x0 + ww]
            for y in window_starts(h, wh)
            for x0 in window_starts(w, ww)
        ]
        return torch.cat(tiles).flatten(1, 2)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        p = soft_assignment(z, self.codebook, self.temperature)  # (B, h, w, K)
        B, K = p.shape[0], p.shape[-1]
        if self.masked is not None:
            with torch.no_grad():
                labels = self.labels if self.labels is not None else [self.label] * B
                log_q = self.masked.log_probs(p.detach().argmax(-1), labels)  # (B, h, w, K)
            return -(p * log_q).sum(-1).flatten(1).mean(1)
        q = self._tiles(p)  # (nB, n, K)
        prefix = self.prefix.expand(q.shape[0], -1)
        # The transformer reads the tokens the decoder shows (z's nearest codes) and is not
        # differentiated: each soft assignment is pulled toward what the prior expects after
        # the actual tokens before it. Fed soft tokens instead, the loss falls by moving z
        # between codes without changing the picture.
        with torch.no_grad():
            idx = self._tiles(p.detach().argmax(-1)[..., None])[..., 0]  # (nB, n)
            logits = self.gpt(torch.cat([prefix, idx[:, :-1]], dim=1))
        log_q = F.log_softmax(logits[:, prefix.shape[1] - 1 :].float(), dim=-1)[..., :K]
        nll = -(q * log_q).sum(-1).mean(-1)  # (nB,) nats per token
        return nll.view(-1, B).mean(0)
