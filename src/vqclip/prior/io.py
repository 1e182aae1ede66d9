"""Reading and writing token priors: taming Net2NetTransformer .ckpt + YAML, and our
.safetensors + JSON.

A Net2NetTransformer checkpoint holds four models; only `transformer.*` is the prior. The
first stage (`first_stage_model.*`, the VQGAN, loaded by the VQGAN loader), the conditioning
stage (`cond_stage_model.*`) and the `permuter.*` are ignored on purpose; every other key must
match the GPT exactly (vqclip.statedict lists missing, unexpected and mis-shaped keys). The
pickle is read through vqclip.safeload, so it runs no code. Sizes come off the weights
(vocab_size and n_embd from tok_emb, block_size from pos_emb, n_layer from the block names,
n_unmasked from the mask); only n_head and the conditioning come from the YAML.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
import yaml

from vqclip.atomic import atomic_write_bytes, atomic_write_text
from vqclip.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vqclip.prior.transformer import TokenTransformer, TransformerConfig
from vqclip.safeload import load_torch_checkpoint
from vqclip.statedict import load_strict

FORMAT = "vqclip-prior"
VERSION = 1
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CONDITIONS = ("sos", "class", "coord", "masked")
_PREFIX = "transformer."
_IGNORED = ("first_stage_model.", "cond_stage_model.", "permuter.")
_NET2NET = "taming.models.cond_transformer.Net2NetTransformer"
_COND_TARGETS = {
    "taming.modules.util.Labelator": "class",
    "taming.modules.misc.coord.CoordStage": "coord",
}


@dataclass(frozen=True)
class Condition:
    """What precedes the image tokens: `sos` (one start token, unconditional models), `class`
    (one class-label token, ImageNet's cin transformer; the label picks the token) or `coord`
    (FacesHQ: one token per latent cell of the image's raster position, `n_embed` levels), or
    `masked`: a bidirectional model (every position sees every other) that predicts the tokens
    at positions holding `mask_token` from all the others (MaskGIT's objective); with no
    prefix, or, when `n_classes` is above 0, one class token first: class c is token
    `mask_token + 1 + c`, and the mask token there stands for an unknown class (such a prior is
    trained with the class sometimes hidden, so it draws without one too). `class_names` name
    the classes of a class-conditional prior, when it knows them (`prior_class` may then be
    chosen from the prompt)."""

    kind: str = "sos"
    sos_token: int = 0
    n_classes: int = 0
    n_embed: int = 0  # coord: quantisation levels of the position
    mask_token: int = -1  # masked: the index standing for "unknown here"
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in CONDITIONS:
            raise ConfigError(f"prior condition {self.kind!r}: choose from {', '.join(CONDITIONS)}")
        names = self.class_names
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"prior class_names {names!r}: expected a list of strings")
        if names and len(names) != self.n_classes:
            raise ConfigError(f"prior class_names: {len(names)} names for {self.n_classes} classes")
        object.__setattr__(self, "class_names", tuple(names))

    def to_dict(self) -> dict[str, Any]:
        keys = ("kind", "sos_token", "n_classes", "n_embed", "mask_token")
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        if self.class_names:
            out["class_names"] = list(self.class_names)
        return out


@dataclass
class TokenPrior:
    """A loaded prior: the GPT and what conditions it."""

    transformer: TokenTransformer
    condition: Condition
    source: str

    def prefix(self, batch: int, grid: tuple[int, int], label: int | None) -> torch.Tensor:
        """The conditioning tokens (batch, P) of an (h, w) grid of image tokens."""
        c = self.condition
        if c.kind == "masked":
            if not c.n_classes:
                return torch.zeros((batch, 0), dtype=torch.long)
            if label is None:  # the unknown class
                return torch.full((batch, 1), c.mask_token, dtype=torch.long)
            self._check_label(label)
            return torch.full((batch, 1), c.mask_token + 1 + label, dtype=torch.long)
        if c.kind == "class":
            if label is None:
                raise ConfigError(
                    f"prior {self.source} is class-conditional: give prior_class "
                    f"(0..{c.n_classes - 1})"
                )
            self._check_label(label)
            return torch.full((batch, 1), label, dtype=torch.long)
        if c.kind == "coord":
            # taming's CoordStage of a raster-position image (y * W + x) / (H * W), area-pooled
            # to the latent grid: the mean position of each cell's pixels, times n_embed, rounded.
            h, w = grid
            f = 16  # pixels per cell: FacesHQ's VQGAN and CoordStage down_factor
            pos = torch.arange(h * f * w * f, dtype=torch.float64).view(1, 1, h * f, w * f)
            pooled = torch.nn.functional.avg_pool2d(pos / (h * f * w * f), f)
            tokens = (pooled.clamp(0, 1) * c.n_embed).round().long().view(1, -1)
            return tokens.clamp(max=self.transformer.config.vocab_size - 1).expand(batch, -1)
        return torch.full((batch, 1), c.sos_token, dtype=torch.long)

    def _check_label(self, label: int) -> None:
        n = self.condition.n_classes
        if not 0 <= label < n:
            names = self.condition.class_names
            known = f" ({', '.join(names)})" if names else ""
            raise ConfigError(f"prior_class={label}: must be in [0, {n}){known}")

    def prefix_length(self, grid: tuple[int, int]) -> int:
        c = self.condition
        if c.kind == "masked":
            return 1 if c.n_classes else 0
        return grid[0] * grid[1] if c.kind == "coord" else 1


def config_path_for(weights: str | os.PathLike) -> Path:
    return Path(weights).with_suffix(".json")


def _read_yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise WeightsNotFoundError(f"prior config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not a readable YAML file: {e}") from None
    model = data.get("model") if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping) or model.get("target") != _NET2NET:
        raise ConfigError(f"{path}: model.target is not {_NET2NET}; is it a transformer's YAML?")
    params = model.get("params")
    if not isinstance(params, Mapping):
        raise ConfigError(f"{path}: model.params is missing")
    return params


def condition_from_taming(params: Mapping[str, Any], where: str) -> Condition:
    """The conditioning of a Net2NetTransformer's params; segmentation (COCO, S-FLCKR) is not
    supported: its condition is a second VQGAN's tokens of a segmentation map."""
    stage = params.get("cond_stage_config")
    if stage == "__is_unconditional__":
        return Condition("sos", sos_token=int(params.get("sos_token", 0)))
    target = stage.get("target") if isinstance(stage, Mapping) else None
    kind = _COND_TARGETS.get(target)
    stage_params = stage.get("params") or {} if isinstance(stage, Mapping) else {}
    if kind == "class":
        return Condition("class", n_classes=int(stage_params.get("n_classes", 1000)))
    if kind == "coord":
        return Condition("coord", n_embed=int(stage_params.get("n_embed", 1024)))
    raise ConfigError(
        f"{where}: conditioning {target!r} is not supported as a prior (supported: "
        "unconditional, class label, coordinates); segmentation-conditioned transformers "
        "(COCO, S-FLCKR) need their segmentation VQGAN"
    )


def sizes_from_weights(
    sd: Mapping[str, torch.Tensor], n_head: int, source: str
) -> TransformerConfig:
    """The GPT's sizes read off its weights; `n_head` is not in them."""
    for key in ("tok_emb.weight", "pos_emb"):
        if key not in sd:
            raise CheckpointError(f"{source}: no {key!r}; is it a taming transformer?")
    vocab_size, n_embd = sd["tok_emb.weight"].shape
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    n_unmasked = 0
    if "blocks.0.attn.mask" in sd:
        first_row = sd["blocks.0.attn.mask"][0, 0, 0]
        n_unmasked = int(first_row.sum()) if first_row.sum() > 1 else 0
    return TransformerConfig(
        vocab_size=int(vocab_size),
        block_size=int(sd["pos_emb"].shape[1]),
        n_layer=max(blocks) + 1 if blocks else 0,
        n_head=n_head,
        n_embd=int(n_embd),
        n_unmasked=n_unmasked,
    )


def taming_state_dict(checkpoint: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The GPT's weights of a Net2NetTransformer checkpoint; the VQGAN, the conditioning stage
    and the permuter are dropped, anything else is kept so the strict load reports it."""
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{source}: 'state_dict' is a {type(sd).__name__}, not a mapping")
    if not any(k.startswith(_PREFIX) for k in sd):
        raise CheckpointError(f"{source} holds no transformer.* weights; is it a transformer?")
    out = {}
    for k, v in sd.items():
        if k.startswith(_IGNORED):
            continue
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{source}: entry {k!r} is not a tensor")
        out[k[len(_PREFIX) :] if k.startswith(_PREFIX) else k] = v
    return out


def load_prior(
    checkpoint: str | os.PathLike, config: str | os.PathLike | None = None
) -> TokenPrior:
    """A prior for inference (eval mode, frozen, fp32, CPU) from a taming .ckpt with its YAML, or
    a .safetensors file written by `save_prior` with its JSON beside it."""
    path = Path(checkpoint)
    suffix = path.suffix.lower()
    if suffix not in (*TORCH_SUFFIXES, ".safetensors"):
        raise CheckpointError(
            f"{path}: unknown prior type {suffix!r}; expected a taming transformer "
            f"{'/'.join(TORCH_SUFFIXES)} (with its YAML) or a .safetensors file from save_prior"
        )
    if not path.is_file():
        raise WeightsNotFoundError(f"prior checkpoint {path} does not exist")
    if suffix == ".safetensors":
        meta = _read_json(Path(config) if config else config_path_for(path))
        try:
            sd = safetensors.torch.load_file(path, device="cpu")
        except (safetensors.SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
        n_head = meta["transformer"].get("n_head") if isinstance(meta["transformer"], dict) else 0
        condition = Condition(**meta.get("condition", {}))
    else:
        if config is None:
            raise ConfigError(
                f"{path} is a taming checkpoint: pass its model YAML (e.g. configs/model.yaml), "
                "which holds n_head and the conditioning"
            )
        params = _read_yaml(Path(config))
        gpt = (params.get("transformer_config") or {}).get("params") or {}
        n_head = gpt.get("n_head")
        condition = condition_from_taming(params, str(config))
        sd = taming_state_dict(load_torch_checkpoint(path), path.name)
    if not isinstance(n_head, int) or n_head < 1:
        raise ConfigError(f"{config or path}: n_head missing or not a positive integer")
    sizes = sizes_from_weights(sd, n_head, path.name)
    with torch.device("meta"):
        model = TokenTransformer(sizes)
    model = model.to_empty(device="cpu")
    load_strict(model, sd, source=path.name)
    model = model.float().eval().requires_grad_(False)
    return TokenPrior(model, condition, path.name)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise WeightsNotFoundError(f"prior config {path} does not exist (save_prior writes it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a vqclip prior config (format {FORMAT!r})")
    if data.get("version") != VERSION or not isinstance(data.get("transformer"), dict):
        raise ConfigError(f"{path}: prior config version {data.get('version')!r}; expected 1")
    return data


def save_prior(prior: TokenPrior, path: str | os.PathLike, *, half: bool = True) -> None:
    """`path` (.safetensors, taming's names, fp16 unless `half` is False) and its JSON."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ConfigError(f"save_prior writes .safetensors files, got {path}")
    dtype = torch.float16 if half else torch.float32
    tensors = {
        k: v.detach().cpu().to(dtype).contiguous()
        for k, v in prior.transformer.state_dict().items()
    }
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata={"format": "pt"}))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "transformer": prior.transformer.config.to_dict(),
        "condition": prior.condition.to_dict(),
    }
    atomic_write_text(config_path_for(path), json.dumps(meta, indent=2) + "\n")
