"""The prior loss: how likely a token transformer finds the loop's current latent grid.

The loop's latent z is continuous; the decoder sees its nearest codes. To score z with a model of
token sequences and still get a gradient, each latent vector becomes a soft code assignment
p = softmax(-||z - e_k||^2 / (T * s)) over the codebook (s: the codebook's mean squared distance
between nearest neighbours, so a temperature T means the same for every VQGAN). The
transformer reads the soft tokens as embeddings p @ tok_emb after its conditioning prefix and
predicts each next token; the loss is the cross-entropy of the next soft assignment under
those logits, in nats per token (the entropy of p plus the KL divergence from the prior's
prediction). It is low for token layouts like the training images' and high for, say, an
isolated token of object colour in a background, which is what the guides alone accept.

Grids with more tokens than the transformer's block are scored in windows of at most a block
(16x16 for taming's 256-token models, as taming samples large images), tiled with the last
window flush with the edge, the windows averaged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vqclip.errors import ConfigError
from vqclip.prior.io import TokenPrior


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


def window_starts(length: int, window: int) -> list[int]:
    """Starts of windows of `window` tiling [0, length), the last flush with the end."""
    starts = list(range(0, length - window + 1, window))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


class PriorLoss:
    """Scores latents (B, C, h, w) under `prior`; `label` is the class of a class-conditional
    prior. Call it for the (B,) loss; the transformer stays frozen."""

    def __init__(
        self,
        prior: TokenPrior,
        codebook: torch.Tensor,
        grid: tuple[int, int],
        *,
        temperature: float = 1.0,
        label: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        gpt = prior.transformer
        n_codes = codebook.shape[0]
        if gpt.config.vocab_size < n_codes:
            raise ConfigError(
                f"prior {prior.source} knows {gpt.config.vocab_size} tokens but the VQGAN has "
                f"{n_codes} codes: it was trained for another VQGAN"
            )
        self.gpt = gpt.to(device)
        self.codebook = codebook.detach().float().to(device)
        self.temperature = temperature * nearest_neighbour_scale(self.codebook)
        self.window = self._window(prior, grid)
        self.prefix = prior.prefix(1, self.window, label).to(device)  # (1, P)
        self.table = gpt.tok_emb.weight[:n_codes]  # (K, n_embd): image codes' embeddings

    @staticmethod
    def _window(prior: TokenPrior, grid: tuple[int, int]) -> tuple[int, int]:
        block = prior.transformer.config.block_size
        h, w = grid

        def fits(n: int) -> bool:  # prefix + all but the last of n tokens fit in the block
            return prior.prefix_length((1, n)) + n - 1 <= block

        if fits(h * w):
            return grid
        side = math.isqrt(block)
        while side > 1 and not fits(side * side):
            side -= 1
        return (min(h, side), min(w, side))

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        p = soft_assignment(z, self.codebook, self.temperature)  # (B, h, w, K)
        B, h, w, K = p.shape
        wh, ww = self.window
        tiles = [
            p[:, y : y + wh, x : x + ww] for y in window_starts(h, wh) for x in window_starts(w, ww)
        ]
        q = torch.cat(tiles).reshape(len(tiles) * B, wh * ww, K)  # (nB, n, K)
        prefix = self.prefix.expand(q.shape[0], -1)
        soft = q[:, :-1] @ self.table  # (nB, n-1, n_embd)
        logits = self.gpt(prefix, soft)[:, prefix.shape[1] - 1 :]  # (nB, n, vocab)
        log_q = F.log_softmax(logits.float(), dim=-1)[..., :K]
        nll = -(q * log_q).sum(-1).mean(-1)  # (nB,) nats per token
        return nll.view(len(tiles), B).mean(0)
