"""Strict state-dict loading with an error that lists every mismatch.

The checkpoint's names are the compatibility contract (see docs): a key missing, unexpected or
of the wrong shape is an error, never silently skipped as taming's `strict=False` does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from vqclip.errors import CheckpointError

_MAX_LISTED = 20


def _listing(title: str, rows: list[str]) -> str:
    shown = rows[:_MAX_LISTED]
    more = f"\n    ... and {len(rows) - len(shown)} more" if len(rows) > len(shown) else ""
    return f"  {title} ({len(rows)}):\n" + "\n".join(f"    {r}" for r in shown) + more


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load `state_dict` into `module`, requiring the exact same names and shapes.

    Raises CheckpointError naming `source` and listing missing keys, unexpected keys and
    shape mismatches (each with both shapes), so a wrong config or a wrong file is obvious.
    """
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [f"{source} does not match the model's configuration:"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if mismatched:
            parts.append(_listing("shape mismatches", mismatched))
        parts.append("Check that the config (YAML/JSON) belongs to this checkpoint.")
        raise CheckpointError("\n".join(parts))
    module.load_state_dict(dict(state_dict), strict=True)
