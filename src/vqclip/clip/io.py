"""Load and save CLIP weights: safetensors or plain PyTorch state dicts, loaded strictly.

Preferred source: OpenCLIP's hub files (`open_clip_model.safetensors`), which keep OpenAI's
parameter names. OpenAI's own `.pt` downloads are TorchScript archives; loading those would run
code from the file, so they are refused with a pointer to the safetensors copy.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from vqclip.atomic import atomic_write_bytes, atomic_write_text
from vqclip.clip.config import CLIPConfig, clip_config_from_state_dict
from vqclip.clip.model import CLIP, build_empty
from vqclip.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vqclip.statedict import load_strict

# Integer entries OpenAI's state dicts carry next to the tensors; they are not parameters.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def config_path(weights: str | os.PathLike) -> Path:
    """The JSON config `save_clip` writes beside a weights file (same stem)."""
    return Path(weights).with_suffix(".json")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            # TorchScript archives hold `<root>/code/...` and `<root>/constants.pkl`.
            if parts[-1] == "constants.pkl" or (len(parts) > 2 and parts[1] == "code"):
                return True
    return False


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            state_dict = safetensors.torch.load_file(path, device="cpu")
        except (safetensors.SafetensorError, OSError) as e:
            raise CheckpointError(f"cannot read {path} as safetensors: {e}") from None
    else:
        state_dict = _read_torch_file(path)
    for key in _OPENAI_EXTRA_KEYS:
        state_dict.pop(key, None)
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} is not a plain state dict: non-tensor entries {bad[:5]}")
    return state_dict


def _read_torch_file(path: Path) -> dict[str, Any]:
    if _is_torchscript(path):
        raise CheckpointError(
            f"{path} is a TorchScript archive (OpenAI's original CLIP download); vqclip does not "
            "load those because that runs code from the file. Use OpenCLIP's safetensors copy "
            "instead (hub repo timm/vit_base_patch32_clip_224.openai and its siblings, file "
            "open_clip_model.safetensors), or run `vqclip models download`."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe pickles
        raise CheckpointError(f"cannot read {path} as a PyTorch state dict: {e}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def _resolve_config(
    path: Path,
    state_dict: Mapping[str, torch.Tensor],
    config: CLIPConfig | Mapping[str, Any] | None,
    quick_gelu: bool | None,
) -> CLIPConfig:
    sidecar = config_path(path)
    if config is None and sidecar.is_file():
        try:
            config = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read the CLIP config {sidecar}: {e}") from None
    if config is None:
        return clip_config_from_state_dict(
            state_dict, quick_gelu=True if quick_gelu is None else quick_gelu
        )
    if isinstance(config, CLIPConfig):
        config = config.to_dict()
    elif not isinstance(config, Mapping):
        raise ConfigError(f"config must be a CLIPConfig or a dict, got {type(config).__name__}")
    if quick_gelu is not None:
        config = {**config, "quick_gelu": quick_gelu}
    elif "quick_gelu" not in config:  # a CLIP_PRESETS entry holds sizes only
        raise ConfigError(
            "the CLIP config does not say which activation the weights use: pass "
            "quick_gelu=True for OpenAI's weights or quick_gelu=False for LAION's"
        )
    return CLIPConfig.from_dict(config)


def load_clip(
    path: str | os.PathLike,
    config: CLIPConfig | Mapping[str, Any] | None = None,
    *,
    quick_gelu: bool | None = None,
    device: str | torch.device = "cpu",
) -> CLIP:
    """Load a CLIP (ViT or ResNet) from .safetensors or a .bin/.pt/.pth state dict, strictly.

    The config is, in order: `config` if given (a CLIPConfig, its dict, or a `CLIP_PRESETS`
    entry, which then needs `quick_gelu`); the JSON `save_clip` wrote beside the file; else it
    is inferred from the tensor shapes. The activation cannot be inferred: then `quick_gelu`
    defaults to True, right for OpenAI's weights; pass False for LAION's. A `quick_gelu` given
    explicitly overrides the config's. Returns the model in eval mode with
    gradients off for its parameters (they still flow to input images).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"CLIP weights not found: {path}")
    state_dict = _read_state_dict(path)
    cfg = _resolve_config(path, state_dict, config, quick_gelu)
    model = build_empty(cfg, device)
    for key in model.state_dict():
        # A BatchNorm step counter (ResNet towers): bookkeeping that some exports drop.
        if key.endswith(".num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.tensor(0)
    load_strict(model, state_dict, source=str(path))
    return model.eval().requires_grad_(False)


def save_clip(model: CLIP, path: str | os.PathLike) -> None:
    """Write `model`'s weights to `path` (.safetensors) and its config beside it (.json)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(
            f"save_clip writes safetensors; the path must end in .safetensors: {path}"
        )
    # Config first: weights without their config would load with a guessed activation.
    atomic_write_text(config_path(path), json.dumps(model.config.to_dict(), indent=2) + "\n")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, safetensors.torch.save(tensors))
