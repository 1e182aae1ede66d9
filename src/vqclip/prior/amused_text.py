"""aMUSEd's text condition from vqclip's CLIP text tower: the penultimate layer's hidden states
(what its U-ViT cross-attends to) and the projected pooled embedding (what modulates it).

What aMUSEd's pipeline does (diffusers 0.42.1 `pipelines/deprecated/amused/pipeline_amused.py`,
with transformers' `CLIPTextModelWithProjection`), and how it is done here:
- Tokens: its CLIPTokenizer with padding="max_length", truncation=True, max_length=77: the start
  token, the text's tokens cut to 75, the end token, then the pad token to 77 (no attention mask
  is passed: the padding is read like any token, through CLIP's causal attention only).
- The pad token is the one the repository's tokenizer/special_tokens_map.json names (downloaded
  with the prior; `tokenizer_pad_token` reads it; transformers' CLIPTokenizer pads with
  "<|endoftext|>" where the map names none). "!" (id 0, as in the LAION CLIP tokenizers SDXL
  uses) is `PAD_TOKEN`, the default of a prior loaded without the map. transformers splits
  special tokens out of the text before BPE, so a pad token typed in the prompt becomes the pad
  token there, not CLIP's word-final piece; `amused_tokens` does the same.
- `hidden_states[-2]`: the output of the last block but one (11 of 12 for L/14), before the last
  block and the final LayerNorm: (1, 77, 768).
- `text_embeds`: the final LayerNorm of the last block's output at the end token, times the
  projection: (1, 768). Its text config keeps eos_token_id 2, transformers' legacy rule: the end
  token is the row's largest id, as vqclip's CLIP pools.
- Classifier-free guidance compares the prompt's condition with the negative prompt's, the
  empty prompt ("") when none is given.

aMUSEd's text encoder (the Hub repositories' `text_encoder/`; amused-512's config: 12 layers,
width 768, quick_gelu, projection 768) is a CLIP ViT-L/14 text tower in transformers' names;
`clip_text_state_dict` renames it to OpenAI's, and `load_text_tower` loads it, strictly, into the
text tower of a vqclip CLIP; `load_text_encoder` builds that CLIP from its config.json.

In vqclip's loop the prior reads two texts of a vqclip prompt: `prompt_text`, its positive text
prompts joined as one prompt, and `negative_text`, its negative ones, aMUSEd's negative prompt
(vqclip.prior.plugin sets them for each run).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqclip.clip.config import CLIPConfig
from vqclip.clip.model import CLIP, build_empty
from vqclip.clip.tokenizer import default_tokenizer
from vqclip.errors import CheckpointError, ConfigError
from vqclip.generate.prompts import parse_story
from vqclip.prior.amused import PAD_TOKEN, AmusedPrior
from vqclip.statedict import load_strict
from vqclip.vqgan.amused_vq import read_json, read_safetensors

CONTEXT_LENGTH = 77
# transformers' CLIPTokenizer pads with its end token where special_tokens_map.json names no pad
TRANSFORMERS_PAD_TOKEN = "<|endoftext|>"

_LAYER = re.compile(r"text_model\.encoder\.layers\.(\d+)\.([\w.]+)\.(weight|bias)")
_LAYER_PARTS = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_QKV = {"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v"}
_RENAMED = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
# transformers' position ids: arange(77), derived, saved by older versions
_DERIVED = ("text_model.embeddings.position_ids",)
# transformers' CLIPTextConfig settings that shape the tower, with its defaults
_TEXT_SETTINGS: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "projection_dim": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
# aMUSEd's text_encoder/config.json: CLIP ViT-L/14's text tower
AMUSED_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "clip_text_model",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "quick_gelu",
}
_QUICK_GELU = {"quick_gelu": True, "gelu": False}
# vqclip's CLIP has an image tower; the text encoder's is a placeholder of one small layer
_PLACEHOLDER_IMAGE = dict(image_size=14, patch_size=14, vision_width=64, vision_layers=1)


# transformers' names of CLIP's start and end tokens -> vqclip's tokenizer's
_SPECIAL_NAMES = {"<|startoftext|>": "<start_of_text>", "<|endoftext|>": "<end_of_text>"}

# helper functions


def clip_token_id(token: str) -> int:
    """The id of one of CLIP's tokens, given as transformers' CLIPTokenizer writes it."""
    encoder = default_tokenizer().encoder
    token_id = encoder.get(_SPECIAL_NAMES.get(token, token))
    if token_id is None:
        raise ConfigError(f"aMUSEd pad token {token!r} is not one of CLIP's tokens")
    return token_id


def amused_tokens(prompt: str, *, pad: str = PAD_TOKEN) -> torch.Tensor:
    """(1, 77) token ids of `prompt` as aMUSEd's tokenizer gives them: start, the text's tokens
    (the pad token's text is split out of it and stands for the pad token), cut to 75, end, then
    the pad token."""
    tokenizer = default_tokenizer()
    if not isinstance(prompt, str):
        raise ConfigError(f"aMUSEd prompt must be a string, got {type(prompt).__name__}")
    pad_id = clip_token_id(pad)
    ids: list[int] = []
    for i, piece in enumerate(prompt.split(pad)):
        if i:
            ids.append(pad_id)  # the pad token's text, split out of the prompt
        ids.extend(tokenizer.encode(piece))
    ids = [tokenizer.sot_id, *ids[: CONTEXT_LENGTH - 2], tokenizer.eot_id]
    out = torch.full((1, CONTEXT_LENGTH), pad_id, dtype=torch.long)
    out[0, : len(ids)] = torch.tensor(ids)
    return out


@torch.no_grad()
def text_condition(clip: CLIP, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden (B, L, width), pooled (B, embed_dim)), float32, of token ids (B, L) through
    `clip`'s text tower: the states before its last block (no final LayerNorm), and the final
    LayerNorm of the last block's output at the end token (the row's largest id), projected."""
    c = clip.config
    if tokens.ndim != 2 or tokens.shape[1] != c.context_length or tokens.is_floating_point():
        raise ConfigError(
            f"aMUSEd text: token ids of shape (B, {c.context_length}), got "
            f"{tuple(tokens.shape)} {tokens.dtype}"
        )
    blocks = clip.transformer.resblocks
    if len(blocks) < 2:
        raise ConfigError("aMUSEd text: the CLIP text tower needs at least 2 blocks")
    tokens = tokens.to(clip.token_embedding.weight.device)
    x = clip.token_embedding(tokens) + clip.positional_embedding  # (B, L, C)
    for block in blocks[:-1]:
        x = block(x)
    hidden = x  # hidden_states[-2]
    x = clip.ln_final(blocks[-1](x))
    eot = tokens.argmax(dim=-1)  # the end token has the largest id
    pooled = x[torch.arange(x.shape[0], device=x.device), eot] @ clip.text_projection
    return hidden.float(), pooled.float()


def amused_text_condition(
    clip: CLIP, prompt: str, *, pad: str = PAD_TOKEN
) -> tuple[torch.Tensor, torch.Tensor]:
    """aMUSEd's text condition of `prompt` by `clip` (its text tower: aMUSEd's, CLIP ViT-L/14),
    padded with `pad`: hidden states (1, 77, 768) and pooled embedding (1, 768), float32, on the
    CLIP's device."""
    if clip.config.context_length != CONTEXT_LENGTH:
        raise ConfigError(
            f"aMUSEd reads {CONTEXT_LENGTH} text tokens; this CLIP's context is "
            f"{clip.config.context_length}"
        )
    return text_condition(clip, amused_tokens(prompt, pad=pad))


def _joined(prompt: str, sign: int) -> str:
    return ", ".join(str(spec.value) for spec in parse_story(prompt).specs(sign))


def prompt_text(prompt: str) -> str:
    """The one text aMUSEd reads for a vqclip prompt: its positive text prompts (every story
    part's, in order) joined by ", "; "" (the empty prompt) when it has none."""
    return _joined(prompt, 1)


def negative_text(prompt: str) -> str:
    """aMUSEd's negative prompt for a vqclip prompt: its negative text prompts (`a cat|blurry:-1`
    gives "blurry") joined by ", "; "" (the empty prompt, the pipeline's default) when it has
    none. Classifier-free guidance steers away from it."""
    return _joined(prompt, -1)


def tokenizer_pad_token(path: str | os.PathLike) -> str:
    """The pad token that a tokenizer's special_tokens_map.json names (transformers' layout: a
    string or {"content": ...}); its end token "<|endoftext|>" where the map names none, as
    transformers' CLIPTokenizer does. Refused when it is not one of CLIP's tokens."""
    path = Path(path)
    data = read_json(path)
    pad = data.get("pad_token", TRANSFORMERS_PAD_TOKEN)
    if isinstance(pad, dict):
        pad = pad.get("content")
    if isinstance(pad, str):
        try:
            clip_token_id(pad)
            return pad
        except ConfigError:
            pass
    raise CheckpointError(
        f"{path}: its pad_token {pad!r} is not one of CLIP's tokens; is it aMUSEd's "
        "tokenizer/special_tokens_map.json?"
    )


def set_prompt(
    prior: AmusedPrior,
    clip: CLIP,
    prompt: str,
    negative: str = "",
    micro: torch.Tensor | None = None,
) -> None:
    """Condition an AmusedPrior on `prompt` (label 0) and on `negative` (label None; the empty
    prompt by default, the pipeline's unconditional text), with micro-conditions `micro` (1, 5)
    (None: the prior's default), padded with the prior's pad token."""
    prior.set_text(*amused_text_condition(clip, prompt, pad=prior.pad_token), micro)
    prior.set_unconditional(*amused_text_condition(clip, negative, pad=prior.pad_token), micro)


# loading aMUSEd's text encoder into a vqclip CLIP


def clip_text_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' CLIPTextModelWithProjection weights in OpenAI's CLIP names: q, k and v
    projections stacked (in that order) into `in_proj_weight`/`in_proj_bias`, the projection
    transposed (Linear's (out, in) to OpenAI's (width, embed_dim)). Raises CheckpointError listing
    the names it does not know."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state_dict.items():
        if key in _DERIVED:
            continue
        if key in _RENAMED:
            out[_RENAMED[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.t()
        elif (m := _LAYER.fullmatch(key)) and m[2] in _QKV:
            qkv.setdefault((m[1], m[3]), {})[_QKV[m[2]]] = value
        elif m and m[2] in _LAYER_PARTS:
            out[f"transformer.resblocks.{m[1]}.{_LAYER_PARTS[m[2]]}.{m[3]}"] = value
        else:
            unknown.append(key)
    for (i, kind), parts in qkv.items():
        if sorted(parts) != ["k", "q", "v"]:  # a projection of the three is missing
            unknown.extend(
                f"text_model.encoder.layers.{i}.self_attn.{p}_proj.{kind}" for p in parts
            )
            continue
        out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]
        )
    if unknown:
        raise CheckpointError(
            f"not a CLIP text tower in transformers' names: {len(unknown)} weights unknown or "
            f"incomplete: {', '.join(sorted(unknown)[:20])}"
        )
    return out


class _TextTower(nn.Module):
    """The text parameters of a CLIP (shared, not copied) under OpenAI's names."""

    def __init__(self, clip: CLIP) -> None:
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection


def load_text_tower(clip: CLIP, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load aMUSEd's text encoder (transformers' names) into `clip`'s text tower, strictly; the
    image tower is left as it is."""
    load_strict(_TextTower(clip), clip_text_state_dict(state_dict), source=source)


def text_encoder_config(data: Mapping[str, Any], *, source: str) -> CLIPConfig:
    """The vqclip CLIPConfig of a transformers CLIPTextConfig (aMUSEd's text_encoder/config.json,
    its defaults where a setting is absent): the text tower's sizes and activation, and a
    placeholder image tower. What vqclip's text tower cannot compute is refused: an MLP other
    than 4x wide, a LayerNorm eps other than 1e-5, an activation other than (quick) GELU."""
    if data.get("model_type", "clip_text_model") != "clip_text_model":
        raise ConfigError(f"{source}: model_type {data['model_type']!r} is not clip_text_model")
    c = {key: data.get(key, default) for key, default in _TEXT_SETTINGS.items()}
    if c["hidden_act"] not in _QUICK_GELU:
        raise ConfigError(f"{source}: hidden_act {c['hidden_act']!r} is not quick_gelu or gelu")
    if c["intermediate_size"] != 4 * c["hidden_size"]:
        raise ConfigError(
            f"{source}: intermediate_size {c['intermediate_size']} is not 4 x hidden_size "
            f"{c['hidden_size']}, the only MLP width vqclip's CLIP has"
        )
    if c["layer_norm_eps"] != 1e-5:
        raise ConfigError(f"{source}: layer_norm_eps {c['layer_norm_eps']!r} is not 1e-5")
    return CLIPConfig(
        embed_dim=c["projection_dim"],
        **_PLACEHOLDER_IMAGE,
        context_length=c["max_position_embeddings"],
        vocab_size=c["vocab_size"],
        text_width=c["hidden_size"],
        text_layers=c["num_hidden_layers"],
        text_heads=c["num_attention_heads"],
        quick_gelu=_QUICK_GELU[c["hidden_act"]],
    )


def load_text_encoder(weights: str | os.PathLike, config: str | os.PathLike) -> CLIP:
    """aMUSEd's text encoder, transformers' CLIPTextModelWithProjection (`weights`: its
    safetensors, fp16 or fp32; `config`: its config.json), loaded strictly into the text tower
    of a vqclip CLIP: float32, eval, frozen, on the CPU. Its image tower is a zeroed placeholder,
    never read; the guides are CLIPs of their own."""
    weights, config = Path(weights), Path(config)
    clip = build_empty(text_encoder_config(read_json(config), source=str(config)))
    with torch.no_grad():
        for p in clip.parameters():  # nothing left uninitialised; the text tower is loaded over
            p.zero_()
    load_text_tower(clip, read_safetensors(weights), source=str(weights))
    return clip.eval().requires_grad_(False)
