"""Codebook quantisers of taming's VQModel (`VectorQuantizer2`) and GumbelVQ (`GumbelQuantize`).

Both map each latent vector to its nearest codebook vector with a straight-through
estimator (van den Oord et al. 2017, https://arxiv.org/abs/1711.00937, eq. 3): the forward
value is the code, the backward pass hands the gradient to z unchanged. This is how
VQGAN+CLIP optimises z. For the Gumbel model the codebook is `embed`; its logit projection
`proj` only served training and is kept so the checkpoint loads strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index (B, h, w) of the codebook row (n, C) closest to each vector of z (B, C, h, w).

    Squared L2 distance ||z||^2 + ||e||^2 - 2 z.e in fp32 (half precision mis-ranks close
    codes). ||z||^2 is the same for every code, so it is left out of the argmin: adding it
    changes nothing but the rounding.
    """
    b, c, h, w = z.shape
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, c).float()  # (BHW, C)
    e = codebook.detach().float()  # (n, C)
    dist = torch.addmm((e * e).sum(1), flat, e.t(), alpha=-2.0)  # (BHW, n)
    return dist.argmin(dim=1).reshape(b, h, w)


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Value of z_q, gradient of z."""
    return z + (z_q - z).detach()


class CodebookQuantizer(nn.Module):
    """Nearest-neighbour quantisation against `self.codebook`; subclasses own the weight."""

    @property
    def codebook(self) -> torch.Tensor:
        raise NotImplementedError

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, C, h, w) for indices (B, h, w)."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)  # (B, C, h, w)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, C, h, w) -> (z_q straight-through, same dtype as z; indices (B, h, w))."""
        indices = nearest_code(z, self.codebook)
        z_q = self.lookup(indices).to(z.dtype)
        return straight_through(z, z_q), indices


class VectorQuantizer(CodebookQuantizer):
    """taming's VectorQuantizer2; its codebook is `embedding.weight` (n_embed, embed_dim)."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight


class GumbelQuantizer(CodebookQuantizer):
    """taming's GumbelQuantize; codebook `embed.weight`, training-only logits `proj`."""

    def __init__(self, z_channels: int, embed_dim: int, n_embed: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(z_channels, n_embed, kernel_size=1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embed.weight
