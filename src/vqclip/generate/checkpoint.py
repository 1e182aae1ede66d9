"""Run checkpoints: latent, optimiser, schedule and RNG state, written atomically.

The file is ours (never a stranger's), and still read with `weights_only=True`: it holds only
tensors and plain containers.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from vqclip.atomic import atomic_write_bytes, atomic_write_text
from vqclip.errors import CheckpointError

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"


def save_run_state(state: dict, directory: str | Path) -> Path:
    """Write `state` to DIR/state.pt (and its settings to DIR/config.json for people to read)."""
    directory = Path(directory)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(directory / STATE_FILE, buffer.getvalue())
    summary = {"step": state["step"], "config": state["config"]}
    atomic_write_text(directory / CONFIG_FILE, json.dumps(summary, indent=2, sort_keys=True))
    return directory / STATE_FILE


def load_run_state(directory: str | Path) -> dict:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"no run checkpoint at {str(path)!r}; "
            "--resume takes the folder given to --checkpoint-dir"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable or truncated file ends here
        raise CheckpointError(f"cannot read the run checkpoint {str(path)!r}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != "vqclip-run":
        raise CheckpointError(f"{str(path)!r} is not a vqclip run checkpoint")
    return state
