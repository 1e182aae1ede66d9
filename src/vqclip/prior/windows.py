"""Windows of a token grid: a prior reads at most its block of tokens at once, so a larger grid is
scored and redrawn window by window (as taming samples large images), the last window flush with
the grid's edge; and what every sampler shares on top of that.
"""

from __future__ import annotations

import math

import torch

from vqclip.errors import ConfigError
from vqclip.prior.io import TokenPrior


def window_starts(length: int, window: int) -> list[int]:
    """Starts of windows of `window` tiling [0, length), the last flush with the end."""
    starts = list(range(0, length - window + 1, window))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def prior_window(prior: TokenPrior, grid: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) window of tokens the prior scores at once: the whole grid when its prefix and
    all but the last token fit in the block, else the largest square that does."""
    block = prior.transformer.config.block_size
    h, w = grid

    def fits(n: int) -> bool:
        return prior.prefix_length((1, n)) + n - 1 <= block

    if fits(h * w):
        return grid
    side = math.isqrt(block)
    while side > 1 and not fits(side * side):
        side -= 1
    return (min(h, side), min(w, side))


class GridSampler:
    """What the causal and the masked samplers share: a (h, w) `grid` scored and redrawn in
    `window`s, and the choice of the tokens to redraw from `surprisal` (B, h, w)."""

    grid: tuple[int, int]
    window: tuple[int, int]

    def surprisal(self, idx: torch.Tensor, labels=None) -> torch.Tensor:
        raise NotImplementedError

    def _windows(self, grid: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Top-left corners of the windows covering `grid` (default: the sampler's)."""
        (h, w), (wh, ww) = grid or self.grid, self.window
        return [(y, x) for y in window_starts(h, wh) for x in window_starts(w, ww)]

    def _check(self, idx: torch.Tensor) -> None:
        if idx.dim() != 3 or tuple(idx.shape[1:]) != self.grid:
            raise ConfigError(
                f"token grid of shape {tuple(idx.shape)}: expected (batch, {self.grid[0]}, "
                f"{self.grid[1]})"
            )

    def least_likely(self, idx: torch.Tensor, fraction: float, labels=None) -> torch.Tensor:
        """(B, h, w) bool: the `fraction` of each image's tokens (at least one) that the prior
        finds least likely (given each row's class, `labels`, for a masked prior)."""
        if not 0 < fraction <= 1:
            raise ConfigError(f"resample fraction={fraction!r}: must be in (0, 1]")
        s = self.surprisal(idx, labels).flatten(1)  # (B, h*w)
        k = max(1, round(fraction * s.shape[1]))
        mask = torch.zeros_like(s, dtype=torch.bool)
        mask.scatter_(1, s.topk(k, dim=1).indices, True)
        return mask.view(idx.shape)
