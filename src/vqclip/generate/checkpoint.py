"""Run checkpoints: a run's whole state in one self-checking file, written atomically.

`DIR/state.bin` is a header line `vqclip-run sha256=<hex>` followed by the `torch.save` bytes
of the state; loading recomputes the hash, so a corrupted or truncated file is refused with a
message instead of silently resuming into another image. It is read with `weights_only=True`.
`DIR/config.json` repeats the step and settings for people to read.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from vqclip.atomic import atomic_write_bytes, atomic_write_text
from vqclip.errors import CheckpointError

STATE_FILE = "state.bin"
CONFIG_FILE = "config.json"
MAGIC = b"vqclip-run sha256="


def save_run_state(state: dict, directory: str | Path) -> Path:
    """Write `state` to DIR/state.bin (and its settings to DIR/config.json for people to read)."""
    directory = Path(directory)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    atomic_write_bytes(directory / STATE_FILE, header + payload)
    summary = {"step": state["step"], "config": state["config"]}
    atomic_write_text(directory / CONFIG_FILE, json.dumps(summary, indent=2, sort_keys=True))
    return directory / STATE_FILE


def load_run_state(directory: str | Path) -> dict:
    """The state saved in DIR; CheckpointError for a missing, corrupted or foreign file."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"no run checkpoint at {str(path)!r}; "
            "--resume takes the folder given to --checkpoint-dir (OUTPUT.run by default)"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read the run checkpoint {str(path)!r}: {e.strerror}") from e
    header, _, payload = data.partition(b"\n")
    if not header.startswith(MAGIC):
        raise CheckpointError(f"{str(path)!r} is not a vqclip run checkpoint")
    if hashlib.sha256(payload).hexdigest().encode() != header[len(MAGIC) :]:
        raise CheckpointError(
            f"the run checkpoint {str(path)!r} is corrupted (its checksum does not match); it "
            "cannot be resumed. Start the run again, or resume from an intact copy."
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # a hash-valid file that still does not unpickle: another version
        raise CheckpointError(f"cannot read the run checkpoint {str(path)!r}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != "vqclip-run":
        raise CheckpointError(f"{str(path)!r} is not a vqclip run checkpoint")
    return state
