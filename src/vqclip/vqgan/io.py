"""Reading and writing VQGAN weights: taming's .ckpt + YAML, and our .safetensors + JSON.

taming checkpoints are read through `vqclip.safeload`, so their pickles run no code; the
training-only `loss.*` weights (discriminator, LPIPS) are dropped and the rest must match
the model exactly. The safetensors form is the fast path: no pickle at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
import yaml

from vqclip.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from vqclip.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vqclip.safeload import load_torch_checkpoint
from vqclip.statedict import load_strict
from vqclip.vqgan.config import VQGANConfig
from vqclip.vqgan.model import VQGAN

FORMAT = "vqclip-vqgan"
VERSION = 1
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# Net2NetTransformer checkpoints (COCO, FacesHQ, S-FLCKR) keep the VQGAN under this prefix.
_FIRST_STAGE = "first_stage_model."


def config_path_for(weights: str | os.PathLike) -> Path:
    """Where `save_vqgan` puts the JSON config of `weights`: same stem, `.json`."""
    return Path(weights).with_suffix(".json")


def _taming_state_dict(checkpoint: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The VQGAN's weights from a taming checkpoint (or a bare state dict)."""
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{source}: 'state_dict' is a {type(sd).__name__}, not a mapping")
    if f"{_FIRST_STAGE}encoder.conv_in.weight" in sd:
        sd = {k[len(_FIRST_STAGE) :]: v for k, v in sd.items() if k.startswith(_FIRST_STAGE)}
    weights = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    not_tensors = sorted(k for k, v in weights.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(
            f"{source} is not a VQGAN state dict; these entries are not tensors: "
            + ", ".join(map(str, not_tensors[:10]))
        )
    return weights


def _read_json_config(path: Path) -> VQGANConfig:
    if not path.is_file():
        raise WeightsNotFoundError(
            f"VQGAN config {path} does not exist (save_vqgan writes it beside the weights)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a vqclip VQGAN config (format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ConfigError(
            f"{path} has config version {data.get('version')!r}; this vqclip reads {VERSION}"
        )
    return VQGANConfig.from_dict(data.get("config", {}))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def _empty_model(config: VQGANConfig) -> VQGAN:
    """A VQGAN with unset weights: skips the random init that loading overwrites anyway."""
    with torch.device("meta"):
        model = VQGAN(config)
    return model.to_empty(device="cpu")


def load_vqgan(
    checkpoint: str | os.PathLike,
    config: str | os.PathLike | VQGANConfig | None = None,
    *,
    device: str | torch.device = "cpu",
) -> VQGAN:
    """Load a VQGAN for inference (eval mode, weights frozen).

    `checkpoint` is a taming .ckpt (config: its model YAML; required) or a .safetensors file
    written by `save_vqgan` (config: its JSON, by default the .json beside it). A VQGANConfig
    may be passed instead of a config file for either.
    """
    path = Path(checkpoint)
    suffix = path.suffix.lower()
    if suffix not in (*TORCH_SUFFIXES, ".safetensors"):
        raise CheckpointError(
            f"{path}: unknown checkpoint type {suffix!r}; expected a taming "
            f"{'/'.join(TORCH_SUFFIXES)} file or a .safetensors file from save_vqgan"
        )
    if not path.is_file():
        raise WeightsNotFoundError(f"VQGAN checkpoint {path} does not exist")

    if suffix == ".safetensors":
        if not isinstance(config, VQGANConfig):
            config = _read_json_config(Path(config) if config else config_path_for(path))
        state_dict = _read_safetensors(path)
    else:
        if config is None:
            raise ConfigError(
                f"{path} is a taming checkpoint: pass the model YAML that comes with it "
                "(e.g. configs/model.yaml) as config"
            )
        if not isinstance(config, VQGANConfig):
            config = VQGANConfig.from_taming_yaml(config)
        state_dict = _taming_state_dict(load_torch_checkpoint(path), path.name)

    model = _empty_model(config)
    load_strict(model, state_dict, source=path.name)
    return model.eval().requires_grad_(False).to(device)


def save_vqgan(model: VQGAN, path: str | os.PathLike) -> None:
    """Write `path` (.safetensors) and its config JSON beside it, each atomically."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ConfigError(f"save_vqgan writes .safetensors files, got {path}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata={"format": "pt"}))
    meta = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict()}
    atomic_write_text(config_path_for(path), json.dumps(meta, indent=2) + "\n")


def save_taming(model: VQGAN, ckpt_path: str | os.PathLike, yaml_path: str | os.PathLike) -> None:
    """Write the model in taming's public format: {"state_dict": ...} .ckpt and model YAML."""
    config = model.config
    params: dict[str, Any] = config.to_taming_params()
    params["lossconfig"] = {"target": "taming.modules.losses.DummyLoss"}
    if config.quantizer == "gumbel":
        # GumbelVQ's constructor requires a temperature schedule; these are the f8 model's.
        params["kl_weight"] = 1.0e-8
        params["temperature_scheduler_config"] = {
            "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
            "params": {
                "warm_up_steps": 0,
                "max_decay_steps": 1000001,
                "lr_start": 0.9,
                "lr_max": 0.9,
                "lr_min": 1.0e-6,
            },
        }
    doc = {"model": {"target": config.taming_target, "params": params}}
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_write(ckpt_path, "wb") as f:
        torch.save({"state_dict": state_dict}, f)
    atomic_write_text(yaml_path, yaml.safe_dump(doc, sort_keys=False))
