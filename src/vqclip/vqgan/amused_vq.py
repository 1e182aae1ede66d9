"""aMUSEd's VQ model (diffusers' `VQModel` in the Hub repositories' `vqvae/` folder) as a VQGAN
for vqclip's loop.

Its encoder and decoder are taming's, those of vqclip.vqgan, at channels 128 x (1, 2, 2, 4, 6),
2 res blocks per level, 64-dim latents and 8192 codes (f16), with two differences read from
diffusers 0.42.1 (`models/autoencoders/vq_model.py`, `vae.py`) and aMUSEd's pipeline:
- no attention anywhere: none in the levels, and none in either middle block
  (`mid_block_add_attention=False`): `AmusedVQ` leaves the middle attention slot empty.
- images in [0, 1], not [-1, 1]: aMUSEd's pipeline decodes and clips to [0, 1], and its training
  script encodes `ToTensor()` images. `AmusedVQ.encode` and `decode` keep vqclip's contract
  (images in [-1, 1]) by mapping at the edges.
The weights carry diffusers' names; `vqclip_name` maps each to the taming name vqclip's modules
carry, and a name it does not know is an error. Its quantiser is taming's too: the nearest code
(squared L2), `quantize.embedding`, with the straight-through estimator.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from vqclip.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vqclip.statedict import load_strict
from vqclip.vqgan.config import VQGANConfig
from vqclip.vqgan.model import VQGAN

# aMUSEd's vqvae/config.json (amused-256 and amused-512 alike), the settings that shape it
AMUSED_VQ_CONFIG: dict[str, Any] = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 256, 512, 768],
    down_block_types=["DownEncoderBlock2D"] * 5,
    up_block_types=["UpDecoderBlock2D"] * 5,
    in_channels=3,
    latent_channels=64,
    layers_per_block=2,
    norm_num_groups=32,
    num_vq_embeddings=8192,
    out_channels=3,
    sample_size=32,
    mid_block_add_attention=False,
    lookup_from_codebook=True,
)
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
# diffusers VQModel settings vqclip's VQGAN has no counterpart for, and the only values it takes.
_FIXED: dict[str, Any] = {
    "act_fn": "silu",
    "norm_num_groups": 32,  # vqclip's GroupNorms have 32 groups
    "norm_type": "group",
    "mid_block_add_attention": False,
}
# Settings that change nothing here: the input size, the latent scaling (VQModel never applies
# it), decoding from indices, the pipeline's fp16 rule.
_IGNORED = ("sample_size", "scaling_factor", "lookup_from_codebook", "force_upcast")
_SIZES = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "num_vq_embeddings",
    "vq_embed_dim",
)


# helper functions: reading a diffusers model folder (aMUSEd's vqvae/ and transformer/)


def read_json(path: Path) -> dict[str, Any]:
    """A config.json's object; a missing file is WeightsNotFoundError, a bad one ConfigError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsNotFoundError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


def diffusers_weights(path: str | os.PathLike, names: Sequence[str]) -> tuple[Path, Path]:
    """(weights file, config.json) of a diffusers model folder, or of a weights file inside one:
    in a folder the first of `names` present (the full-precision file before its .fp16 variant)."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in names if (path / n).is_file()]
        if not found:
            raise WeightsNotFoundError(f"{path} holds none of {', '.join(names)}")
        path = found[0]
    elif not path.is_file():
        raise WeightsNotFoundError(f"{path} does not exist")
    return path, path.with_name("config.json")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors on the CPU; an unreadable file is CheckpointError."""
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def vq_config_from_diffusers(data: Mapping[str, Any], *, source: str = "config") -> VQGANConfig:
    """The VQGANConfig of a diffusers VQModel config.json: block_out_channels c_i become ch = c_0
    and ch_mult c_i / c_0; the settings vqclip cannot build otherwise must have aMUSEd's values."""
    if data.get("_class_name", "VQModel") != "VQModel":
        raise ConfigError(f"{source}: _class_name {data['_class_name']!r} is not VQModel")
    known = (*_FIXED, *_IGNORED, *_SIZES, "down_block_types", "up_block_types")
    unknown = sorted(k for k in data if k not in known and not k.startswith("_"))
    if unknown:
        raise ConfigError(f"{source}: unknown VQModel settings: {', '.join(unknown)}")
    for key, value in _FIXED.items():
        if data.get(key, value) != value:
            raise ConfigError(f"{source}: {key}={data[key]!r} is not supported (only {value!r})")
    channels = list(data.get("block_out_channels", (64,)))
    n = len(channels)
    for key, block in (
        ("down_block_types", "DownEncoderBlock2D"),
        ("up_block_types", "UpDecoderBlock2D"),
    ):
        types = list(data.get(key, (block,)))
        if types != [block] * n:
            raise ConfigError(f"{source}: {key}={types!r}; expected {n} x {block!r}")
    ch = channels[0]
    if not all(isinstance(c, int) and c % ch == 0 for c in channels):
        raise ConfigError(
            f"{source}: block_out_channels={channels} are not multiples of the first, {ch}"
        )
    latent = data.get("latent_channels", 3)
    embed_dim = data.get("vq_embed_dim") or latent
    return VQGANConfig(
        ch=ch,
        out_ch=data.get("out_channels", 3),
        ch_mult=tuple(c // ch for c in channels),
        num_res_blocks=data.get("layers_per_block", 1),
        attn_resolutions=(),
        in_channels=data.get("in_channels", 3),
        z_channels=latent,
        embed_dim=embed_dim,
        n_embed=data.get("num_vq_embeddings", 256),
    )


# the key map: diffusers' VQModel names -> vqclip's (taming's)

_PARAM = r"(weight|bias)"
_SAME = re.compile(
    r"(quant_conv|post_quant_conv|quantize\.embedding|(encoder|decoder)\.conv_(in|out))"
    rf"\.{_PARAM}"
)
_NORM_OUT = re.compile(rf"(encoder|decoder)\.conv_norm_out\.{_PARAM}")
_MID = re.compile(rf"(encoder|decoder)\.mid_block\.resnets\.([01])\.(\w+)\.{_PARAM}")
_DOWN = re.compile(rf"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.{_PARAM}")
_DOWNSAMPLE = re.compile(rf"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.{_PARAM}")
_UP = re.compile(rf"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.{_PARAM}")
_UPSAMPLE = re.compile(rf"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.{_PARAM}")
_RESNET_PARTS = {p: p for p in ("norm1", "conv1", "norm2", "conv2")} | {
    "conv_shortcut": "nin_shortcut"
}


def vqclip_name(key: str, n_levels: int) -> str:
    """The vqclip (taming) name of diffusers VQModel weight `key`, for a model of `n_levels`
    levels: `down_blocks.i` is taming's `down.i`, `up_blocks.k` is `up.{n_levels - 1 - k}`
    (diffusers counts the decoder's levels from the deepest, taming from the full-size one),
    `mid_block.resnets.0/1` are `mid.block_1/2`, a resnet's `conv_shortcut` is its
    `nin_shortcut`, `conv_norm_out` is `norm_out`. Raises KeyError for a name with no
    counterpart (e.g. a mid-block attention)."""
    if _SAME.fullmatch(key):
        return key
    if m := _NORM_OUT.fullmatch(key):
        return f"{m[1]}.norm_out.{m[2]}"
    if (m := _MID.fullmatch(key)) and m[3] in _RESNET_PARTS:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_RESNET_PARTS[m[3]]}.{m[4]}"
    if (m := _DOWN.fullmatch(key)) and m[3] in _RESNET_PARTS:
        return f"encoder.down.{m[1]}.block.{m[2]}.{_RESNET_PARTS[m[3]]}.{m[4]}"
    if m := _DOWNSAMPLE.fullmatch(key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if (m := _UP.fullmatch(key)) and m[3] in _RESNET_PARTS and int(m[1]) < n_levels:
        return f"decoder.up.{n_levels - 1 - int(m[1])}.block.{m[2]}.{_RESNET_PARTS[m[3]]}.{m[4]}"
    if (m := _UPSAMPLE.fullmatch(key)) and int(m[1]) < n_levels:
        return f"decoder.up.{n_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    raise KeyError(key)


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], n_levels: int, *, source: str
) -> dict[str, torch.Tensor]:
    """A diffusers VQModel state dict in vqclip's names. Raises CheckpointError listing every
    name the map does not know."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        try:
            out[vqclip_name(key, n_levels)] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:20]) + (" ..." if len(unknown) > 20 else "")
        raise CheckpointError(
            f"{source}: {len(unknown)} weights an aMUSEd VQ model (no attention) does not have: "
            f"{shown}"
        )
    return out


# main class


class AmusedVQ(VQGAN):
    """aMUSEd's VQ model with vqclip's VQGAN interface: images in [-1, 1] in and out (its own
    range, [0, 1], is mapped at the edges), no attention in the middle blocks."""

    def __init__(self, config: VQGANConfig) -> None:
        if config.attn_resolutions:
            raise ConfigError(
                f"aMUSEd's VQ model has no attention: attn_resolutions={config.attn_resolutions}"
            )
        super().__init__(config)
        # The middle blocks' attention slot stays, empty: no weights and no compute.
        self.encoder.mid.attn_1 = nn.Identity()
        self.decoder.mid.attn_1 = nn.Identity()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) in [-1, 1] -> z (B, embed_dim, H/f, W/f), before quantisation."""
        return super().encode((x + 1) / 2)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Latents (B, embed_dim, h, w) -> image (B, 3, h*f, w*f), roughly in [-1, 1]."""
        return super().decode(z_q) * 2 - 1


def load_amused_vq(path: str | os.PathLike, *, config: str | os.PathLike | None = None) -> AmusedVQ:
    """aMUSEd's VQ model (a diffusers `vqvae/` folder, or its safetensors file with the
    config.json beside it or given as `config`) for inference on the CPU: float32, eval,
    frozen. Raises CheckpointError for a weight with no vqclip counterpart, or a missing or
    mis-shaped one."""
    weights, config_path = diffusers_weights(path, WEIGHT_FILES)
    config_path = config_path if config is None else Path(config)
    vq_config = vq_config_from_diffusers(read_json(config_path), source=str(config_path))
    state_dict = convert_state_dict(
        read_safetensors(weights), len(vq_config.ch_mult), source=str(weights)
    )
    with torch.device("meta"):
        model = AmusedVQ(vq_config)
    model.to_empty(device="cpu")
    load_strict(model, state_dict, source=f"{weights} (diffusers' names mapped to vqclip's)")
    return model.float().eval().requires_grad_(False)
