"""The loop's extension points: what a plug-in of `Run` (a token prior, say) may do, and when.

The loop knows its plug-ins only by this interface, as k-diffusion knows a model wrapper: a new
kind of plug-in is a new class, not a branch in `Run`. Every hook is optional; the defaults do
nothing. A hook reads and changes the run only through what `Run` offers in public: its config,
grid, generator, current tokens (`tokens`, `set_tokens`) and the guides' verdicts
(`whole_image_loss`, `prompt_gradient`, `best_of`). A hook with long work (a redraw) calls
`run.check_stop()` between its parts, so a stop asked for meanwhile need not wait for it: the
step is then undone.
"""

from __future__ import annotations

import typing
from typing import Any

import torch

if typing.TYPE_CHECKING:
    from vqclip.generate.run import Run


class Extension:
    """A plug-in of the loop. Hooks run in this order: `attach` once (models, prompts and the
    generator exist; the latent does not yet), `start` when the config's init is "prior",
    `loss_terms` in every step's forward pass, `after_step` after every optimiser update, and
    `after_last` once after the last step, on a copy of the loop's state (`Run` keeps what it
    leaves as the final latent and puts its own state back). `name` is what a config asks for
    (`GenerateConfig.plug_ins`)."""

    name: str = ""

    def attach(self, run: Run) -> None:
        """Prepare for `run` (checks that fail before the first step belong here)."""

    def start(self, run: Run) -> torch.Tensor | None:
        """(B, h, w) code indices to start from, or None to leave the start to another."""
        return None

    def loss_terms(self, run: Run, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Label -> (B,) loss added to the step's total (and reported under its label)."""
        return {}

    def after_step(self, run: Run) -> None:
        """After each update (`run.step_index` counts it); may change the tokens."""

    def after_last(self, run: Run) -> bool:
        """After the last step; True when it changed the tokens (the final passes)."""
        return False

    def describe(self, index: int) -> dict[str, Any]:
        """What it chose for image `index` (e.g. a prior's class), for the image's metadata."""
        return {}
