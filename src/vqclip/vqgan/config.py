"""VQGAN architecture config: taming-transformers' `ddconfig` plus the codebook settings.

The field names are taming's, so a taming YAML maps onto this config one to one and the
model built from it has the checkpoint's state-dict names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vqclip.errors import ConfigError, WeightsNotFoundError
from vqclip.validation import is_int

QUANTIZERS = ("vq", "gumbel")

# taming's model targets and the quantizer each one uses.
_TAMING_TARGETS = {
    "taming.models.vqgan.VQModel": "vq",
    "taming.models.vqgan.GumbelVQ": "gumbel",
}
# The COCO, FacesHQ and S-FLCKR releases are transformer checkpoints; their VQGAN is the
# "first stage" model, described by `first_stage_config` and stored under `first_stage_model.`.
_TRANSFORMER_TARGET = "taming.models.cond_transformer.Net2NetTransformer"

_DDCONFIG_KEYS = (
    "ch",
    "out_ch",
    "ch_mult",
    "num_res_blocks",
    "attn_resolutions",
    "dropout",
    "in_channels",
    "resolution",
    "z_channels",
    "double_z",
)
# ddconfig keys taming accepts that change nothing for the VQGAN when they have these values.
_DDCONFIG_FIXED = {"resamp_with_conv": True, "give_pre_end": False}


def _check_positive_int(name: str, value: Any) -> None:
    if not is_int(value) or value < 1:
        raise ConfigError(f"VQGANConfig.{name} must be a positive integer, got {value!r}")


def _as_int_tuple(name: str, value: Any, *, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"VQGANConfig.{name} must be a sequence of integers, got {value!r}")
    items = tuple(value)
    if not allow_empty and not items:
        raise ConfigError(f"VQGANConfig.{name} must not be empty")
    if not all(is_int(v) and v >= 1 for v in items):
        raise ConfigError(f"VQGANConfig.{name} must hold positive integers, got {value!r}")
    return items


def _read_yaml(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"VQGAN config {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not a readable YAML file: {e}") from None


@dataclass(frozen=True)
class VQGANConfig:
    """Architecture of a taming-transformers VQGAN (defaults: ImageNet f16 16384)."""

    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    in_channels: int = 3
    resolution: int = 256
    z_channels: int = 256
    double_z: bool = False
    embed_dim: int = 256
    n_embed: int = 16384
    quantizer: str = "vq"

    def __post_init__(self) -> None:
        # Lists from YAML/JSON become tuples so the config stays hashable and comparable.
        object.__setattr__(
            self, "ch_mult", _as_int_tuple("ch_mult", self.ch_mult, allow_empty=False)
        )
        object.__setattr__(
            self,
            "attn_resolutions",
            _as_int_tuple("attn_resolutions", self.attn_resolutions, allow_empty=True),
        )
        for name in ("out_ch", "num_res_blocks", "in_channels", "resolution", "z_channels"):
            _check_positive_int(name, getattr(self, name))
        for name in ("embed_dim", "n_embed"):
            _check_positive_int(name, getattr(self, name))
        _check_positive_int("ch", self.ch)
        if self.ch % 32:
            # Every GroupNorm has 32 groups and the narrowest layer has `ch` channels.
            raise ConfigError(f"VQGANConfig.ch must be a multiple of 32 (GroupNorm), got {self.ch}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ConfigError(f"VQGANConfig.dropout must be a number, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"VQGANConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.double_z is not False:
            raise ConfigError(
                f"VQGANConfig.double_z must be False for a VQGAN, got {self.double_z!r} "
                "(double_z belongs to KL autoencoders, whose configs do not describe a VQGAN)"
            )
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(
                f"VQGANConfig.quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}"
            )

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent token along each side (16 for the f16 models)."""
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["ch_mult"] = list(self.ch_mult)
        out["attn_resolutions"] = list(self.attn_resolutions)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VQGANConfig:
        """Inverse of `to_dict`; every field must be present and no other key."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names if n not in data]
        if unknown:
            raise ConfigError(f"unknown VQGANConfig fields: {', '.join(unknown)}")
        if missing:
            raise ConfigError(f"VQGANConfig is missing fields: {', '.join(missing)}")
        return cls(**{n: data[n] for n in names})

    @classmethod
    def from_taming_yaml(cls, source: str | os.PathLike | Mapping[str, Any]) -> VQGANConfig:
        """Read a taming-transformers model YAML (a path, or the already parsed mapping).

        Accepts `taming.models.vqgan.VQModel` and `GumbelVQ`, and the first stage of a
        `Net2NetTransformer`. Training-only settings (lossconfig, kl_weight, the temperature
        schedule, monitor, ...) are ignored.
        """
        where = str(source) if isinstance(source, (str, os.PathLike)) else "taming config"
        data = _read_yaml(source) if isinstance(source, (str, os.PathLike)) else source
        model = data.get("model") if isinstance(data, Mapping) else None
        if not isinstance(model, Mapping):
            raise ConfigError(f"{where} has no 'model' section; is it a taming model YAML?")
        target = model.get("target")
        params = model.get("params")
        if target == _TRANSFORMER_TARGET and isinstance(params, Mapping):
            stage = params.get("first_stage_config")
            if not isinstance(stage, Mapping):
                raise ConfigError(f"{where}: {target} without a first_stage_config")
            target, params = stage.get("target"), stage.get("params")
        if target not in _TAMING_TARGETS:
            raise ConfigError(
                f"{where}: model.target {target!r} is not a VQGAN; expected one of "
                f"{', '.join(sorted(_TAMING_TARGETS))} (or {_TRANSFORMER_TARGET})"
            )
        if not isinstance(params, Mapping):
            raise ConfigError(f"{where}: model.params is missing")
        if params.get("remap") is not None:
            raise ConfigError(f"{where}: codebook remapping (params.remap) is not supported")
        ddconfig = params.get("ddconfig")
        if not isinstance(ddconfig, Mapping):
            raise ConfigError(f"{where}: model.params.ddconfig is missing")
        for key, value in _DDCONFIG_FIXED.items():
            if key in ddconfig and ddconfig[key] != value:
                raise ConfigError(f"{where}: ddconfig.{key}={ddconfig[key]!r} is not supported")
        unknown = sorted(set(ddconfig) - set(_DDCONFIG_KEYS) - set(_DDCONFIG_FIXED))
        if unknown:
            raise ConfigError(f"{where}: unknown ddconfig keys: {', '.join(unknown)}")
        # taming's Encoder/Decoder default dropout to 0; every other setting must be given.
        ddconfig = {"dropout": 0.0, **ddconfig}
        missing = [f"ddconfig.{k}" for k in _DDCONFIG_KEYS if k not in ddconfig]
        missing += [k for k in ("embed_dim", "n_embed") if k not in params]
        if missing:
            raise ConfigError(f"{where}: model.params is missing {', '.join(missing)}")
        return cls(
            **{k: ddconfig[k] for k in _DDCONFIG_KEYS},
            embed_dim=params["embed_dim"],
            n_embed=params["n_embed"],
            quantizer=_TAMING_TARGETS[target],
        )

    def to_taming_params(self) -> dict[str, Any]:
        """taming's `model.params` minus training settings: ddconfig, embed_dim, n_embed."""
        ddconfig = {k: v for k, v in self.to_dict().items() if k in _DDCONFIG_KEYS}
        return {"embed_dim": self.embed_dim, "n_embed": self.n_embed, "ddconfig": ddconfig}

    @property
    def taming_target(self) -> str:
        """The taming class that this config's checkpoints were trained with."""
        return next(t for t, q in _TAMING_TARGETS.items() if q == self.quantizer)
