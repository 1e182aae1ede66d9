"""aMUSEd's text-conditional masked token model as a masked prior, loaded strictly by diffusers'
names.

aMUSEd (Patil et al., "aMUSEd: An Open MUSE Reproduction", arXiv 2401.01808; weights under
OpenRAIL++, which carries use restrictions) predicts the codes of a 16x-downsampling VQ model's
token grid wherever the grid holds its mask token, given the other tokens, a text and five
micro-conditions. The Hub repositories `amused/amused-256` and `amused/amused-512` store it as
diffusers' `UVit2DModel` in `transformer/` (config.json and diffusion_pytorch_model.safetensors,
or its .fp16 variant). No diffusers code is imported or copied: the names, shapes and formulas
below were read from diffusers 0.42.1 (`models/unets/uvit_2d.py` and the blocks it builds,
`pipelines/deprecated/amused/pipeline_amused.py`, `schedulers/scheduling_amused.py`).

The model (amused-256's sizes; every linear and conv without bias, `use_bias=False`):
1. text (B, 77, 768): `encoder_proj` to 1024, RMSNorm; every attention reads it as keys/values.
2. condition (B, 1024): the pooled text embedding (B, 768), then each of the 5 micro-conditions
   as a 256-wide sinusoidal embedding ([cos, sin], computed in float32 as diffusers does), through
   `cond_embed` (Linear, SiLU, Linear). It modulates every ConvNeXt block and every AdaLN norm.
3. tokens (B, h, w) -> `embed`: a table of 8256 rows (8192 codes, the mask token, rounding),
   RMSNorm, 1x1 conv to 768 channels. There is no positional embedding anywhere.
4. `down_block`: (amused-512 only: RMSNorm, 2x2 stride-2 conv) then 3 x (a ConvNeXt block with
   GlobalResponseNorm, scaled and shifted by the condition; two cross-attentions to the text).
5. 22 `transformer_layers` over the h*w positions, 1024 wide, 16 heads: AdaLN-continuous RMSNorm +
   self-attention, AdaLN RMSNorm + cross-attention to the text, AdaLN LayerNorm + GEGLU (2816).
6. `up_block` (as 4; amused-512: RMSNorm, 2x2 stride-2 transposed conv) and `mlm_layer`: 1x1 conv
   to 768, RMSNorm, 1x1 conv to the logits over the 8192 codes, (B, 8192, h, w) (none for the
   mask token); the scheduler reads them as (B, h*w, 8192), as `AmusedPrior.logits` returns them.
amused-512 reads a 32x32 grid and works at 16x16 inside; amused-256 reads 16x16.

The pipeline masks with the scheduler's `mask_token_id`, which its training script takes as
`vocab_size - 1` (8255); a `scheduler/scheduler_config.json` beside the transformer, when present,
decides. Classifier-free guidance is the pipeline's `uncond + g (cond - uncond)`, with the empty
prompt's text (and the same micro-conditions) as `uncond`. The scheduler's rule for which draws
to keep each round is `amused_left` and `amused_confidence`, vqclip's masked sampler's
`rule="amused"` (`--prior-sampler amused`).
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vqclip.attention import attention
from vqclip.errors import ConfigError
from vqclip.statedict import load_strict
from vqclip.vqgan.amused_vq import diffusers_weights, read_json, read_safetensors

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
VQ_FACTOR = 16  # pixels per token of aMUSEd's VQ model (its pipeline's vae_scale_factor)
# The SkipFF attention blocks of the U-ViT levels fix their RMSNorm's eps, whatever the config.
BLOCK_NORM_EPS = 1e-6


# --- configuration ---


@dataclass(frozen=True)
class UViT2DConfig:
    """diffusers' `UVit2DModel` constructor arguments (its config.json), with its defaults. The
    dropouts do nothing at inference; `sample_size` is the token grid it was trained on."""

    hidden_size: int = 1024
    use_bias: bool = False
    hidden_dropout: float = 0.0
    cond_embed_dim: int = 768
    micro_cond_encode_dim: int = 256
    micro_cond_embed_dim: int = 1280
    encoder_hidden_size: int = 768
    vocab_size: int = 8256
    codebook_size: int = 8192
    in_channels: int = 768
    block_out_channels: int = 768
    num_res_blocks: int = 3
    downsample: bool = False
    upsample: bool = False
    block_num_heads: int = 12
    num_hidden_layers: int = 22
    num_attention_heads: int = 16
    attention_dropout: float = 0.0
    intermediate_size: int = 2816
    layer_norm_eps: float = 1e-6
    ln_elementwise_affine: bool = True
    sample_size: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            kind = type(getattr(UViT2DConfig, name))
            if kind is bool and not isinstance(value, bool):
                raise ConfigError(f"UVit2D {name}={value!r}: expected true or false")
            if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"UVit2D {name}={value!r}: expected an integer >= 1")
            if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ConfigError(f"UVit2D {name}={value!r}: expected a number")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"UVit2D hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.block_out_channels % self.block_num_heads:
            raise ConfigError(
                f"UVit2D block_out_channels={self.block_out_channels} is not divisible by "
                f"block_num_heads={self.block_num_heads}"
            )
        if self.micro_cond_encode_dim % 2 or self.micro_cond_embed_dim % self.micro_cond_encode_dim:
            raise ConfigError(
                f"UVit2D micro_cond_embed_dim={self.micro_cond_embed_dim} must be a whole number "
                f"of even micro_cond_encode_dim={self.micro_cond_encode_dim} embeddings"
            )
        if not self.codebook_size < self.vocab_size:
            raise ConfigError(
                f"UVit2D vocab_size={self.vocab_size} leaves no mask token after "
                f"codebook_size={self.codebook_size} codes"
            )
        if self.downsample and self.sample_size % 2:
            raise ConfigError(f"UVit2D sample_size={self.sample_size}: downsampling needs it even")

    @property
    def n_micro_conds(self) -> int:
        """How many micro-conditions it reads (5 for aMUSEd: width, height, crop x, crop y,
        aesthetic score)."""
        return self.micro_cond_embed_dim // self.micro_cond_encode_dim

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> UViT2DConfig:
        """A diffusers config.json's contents: its `_`-prefixed bookkeeping keys are skipped
        (`_class_name` must be UVit2DModel when present); any other unknown key is an error."""
        if data.get("_class_name", "UVit2DModel") != "UVit2DModel":
            raise ConfigError(f"{source}: _class_name {data['_class_name']!r} is not UVit2DModel")
        names = {f.name for f in fields(cls)}
        unknown = sorted(k for k in data if k not in names and not k.startswith("_"))
        if unknown:
            raise ConfigError(f"{source}: unknown UVit2DModel settings: {', '.join(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in names})


AMUSED_256 = UViT2DConfig(sample_size=16)
AMUSED_512 = UViT2DConfig(downsample=True, upsample=True, sample_size=32)


# --- building blocks ---


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps), times `weight` when affine; the mean square in at least
    float32 (diffusers' rule: half precision would round it badly)."""

    def __init__(self, dim: int, eps: float, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ms = x.to(torch.promote_types(x.dtype, torch.float32)).pow(2).mean(-1, keepdim=True)
        x = (x * torch.rsqrt(ms + self.eps)).to(x.dtype)
        return x if self.weight is None else x * self.weight


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN on (B, H, W, C): each channel's L2 norm over the grid, divided by the
    mean over channels, rescales x; gamma and beta start at 0, so it starts as the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Attention(nn.Module):
    """Multi-head attention of (B, N, query_dim) queries over (B, M, kv_dim) keys and values
    (the queries themselves when no context is given), with diffusers' `Attention` names."""

    def __init__(self, query_dim: int, kv_dim: int, heads: int, bias: bool, out_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(query_dim, query_dim, bias=bias)
        self.to_k = nn.Linear(kv_dim, query_dim, bias=bias)
        self.to_v = nn.Linear(kv_dim, query_dim, bias=bias)
        # theirs holds a Dropout at to_out.1
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim, bias=out_bias)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        context = x if context is None else context

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, -1, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)

        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        y = attention(q, k, v)  # (B, nh, N, hs), scale 1/sqrt(hs)
        return self.to_out[0](y.transpose(1, 2).reshape(B, N, C))


class GEGLU(nn.Module):
    """proj to 2 x dim_out, split in (h, gate): h * GELU(gate)."""

    def __init__(self, dim_in: int, dim_out: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    """`net` = GEGLU, (Dropout: an identity keeps the index), Linear."""

    def __init__(self, dim: int, inner: int, bias: bool) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            [GEGLU(dim, inner, bias), nn.Identity(), nn.Linear(inner, dim, bias)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class AdaNorm(nn.Module):
    """diffusers' AdaLayerNormContinuous: norm(x) * (1 + scale) + shift, with (scale, shift) =
    linear(SiLU(condition)); an RMSNorm, or a LayerNorm (with a bias when `bias`)."""

    def __init__(self, dim: int, cond_dim: int, c: UViT2DConfig, *, rms: bool) -> None:
        super().__init__()
        affine, eps, bias = c.ln_elementwise_affine, c.layer_norm_eps, c.use_bias
        self.linear = nn.Linear(cond_dim, 2 * dim, bias=bias)
        self.norm: nn.Module = (
            RMSNorm(dim, eps, affine)
            if rms
            else nn.LayerNorm(dim, eps=eps, elementwise_affine=affine, bias=bias)
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(cond)).chunk(2, dim=1)  # (B, C) each
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class TransformerLayer(nn.Module):
    """diffusers' BasicTransformerBlock with norm_type "ada_norm_continuous": AdaLN RMSNorm +
    self-attention, AdaLN RMSNorm + cross-attention to the text, AdaLN LayerNorm + GEGLU."""

    def __init__(self, c: UViT2DConfig) -> None:
        super().__init__()
        h, heads, bias = c.hidden_size, c.num_attention_heads, c.use_bias
        self.norm1 = AdaNorm(h, h, c, rms=True)
        self.attn1 = Attention(h, h, heads, bias, bias)
        self.norm2 = AdaNorm(h, h, c, rms=True)
        self.attn2 = Attention(h, h, heads, bias, bias)
        self.norm3 = AdaNorm(h, h, c, rms=False)
        self.ff = FeedForward(h, c.intermediate_size, bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x, cond))
        x = x + self.attn2(self.norm2(x, cond), text)
        return x + self.ff(self.norm3(x, cond))


class ConvNextBlock(nn.Module):
    """x + MLP(RMSNorm(depthwise 3x3 conv(x))) with a GRN inside the 4x-wide MLP, then scaled and
    shifted by the condition: x * (1 + scale) + shift."""

    def __init__(self, c: UViT2DConfig) -> None:
        super().__init__()
        C, bias = c.block_out_channels, c.use_bias
        self.depthwise = nn.Conv2d(C, C, kernel_size=3, padding=1, groups=C, bias=bias)
        self.norm = RMSNorm(C, c.layer_norm_eps, c.ln_elementwise_affine)
        self.channelwise_linear_1 = nn.Linear(C, 4 * C, bias=bias)
        self.channelwise_norm = GlobalResponseNorm(4 * C)
        self.channelwise_linear_2 = nn.Linear(4 * C, C, bias=bias)
        self.cond_embeds_mapper = nn.Linear(c.hidden_size, 2 * C, bias=bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.depthwise(x).permute(0, 2, 3, 1))  # (B, H, W, C)
        h = self.channelwise_norm(F.gelu(self.channelwise_linear_1(h)))  # (B, H, W, 4C)
        x = x + self.channelwise_linear_2(h).permute(0, 3, 1, 2)  # (B, C, H, W)
        scale, shift = self.cond_embeds_mapper(F.silu(cond)).chunk(2, dim=1)  # (B, C) each
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class CrossAttentionBlock(nn.Module):
    """diffusers' SkipFFTransformerBlock: the text, mapped to the block's width (`kv_mapper` on
    SiLU(text), when the widths differ), read by two attentions in turn; both are
    cross-attentions (its attn1 is given the text too), each after an RMSNorm of fixed eps."""

    def __init__(self, c: UViT2DConfig) -> None:
        super().__init__()
        C, bias = c.block_out_channels, c.use_bias
        self.kv_mapper = nn.Linear(c.hidden_size, C, bias=bias) if c.hidden_size != C else None
        self.norm1 = RMSNorm(C, BLOCK_NORM_EPS)
        self.attn1 = Attention(C, C, c.block_num_heads, bias, bias)
        self.norm2 = RMSNorm(C, BLOCK_NORM_EPS)
        self.attn2 = Attention(C, C, c.block_num_heads, bias, bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.kv_mapper is not None:
            text = self.kv_mapper(F.silu(text))  # (B, L, C)
        x = x + self.attn1(self.norm1(x), text)
        return x + self.attn2(self.norm2(x), text)


class Resample(nn.Module):
    """RMSNorm over channels, then a 2x2 stride-2 conv (down: after padding right and bottom by
    one, as diffusers' Downsample2D with padding 0) or transposed conv (up)."""

    def __init__(self, c: UViT2DConfig, *, up: bool) -> None:
        super().__init__()
        C = c.block_out_channels
        self.up = up
        self.norm = RMSNorm(C, c.layer_norm_eps, c.ln_elementwise_affine)
        conv = nn.ConvTranspose2d if up else nn.Conv2d
        self.conv = conv(C, C, kernel_size=2, stride=2, bias=c.use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W)
        return self.conv(x if self.up else F.pad(x, (0, 1, 0, 1)))


class UViTBlock(nn.Module):
    """One U-ViT level: an optional downsample, `num_res_blocks` x (ConvNeXt block, cross-attention
    block), an optional upsample."""

    def __init__(self, c: UViT2DConfig, *, downsample: bool, upsample: bool) -> None:
        super().__init__()
        self.downsample = Resample(c, up=False) if downsample else None
        self.res_blocks = nn.ModuleList(ConvNextBlock(c) for _ in range(c.num_res_blocks))
        self.attention_blocks = nn.ModuleList(
            CrossAttentionBlock(c) for _ in range(c.num_res_blocks)
        )
        self.upsample = Resample(c, up=True) if upsample else None

    def forward(self, x: torch.Tensor, text: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        for res, attn in zip(self.res_blocks, self.attention_blocks, strict=True):
            x = res(x, cond)
            B, C, H, W = x.shape
            x = attn(x.flatten(2).transpose(1, 2), text)  # (B, H*W, C)
            x = x.transpose(1, 2).reshape(B, C, H, W)
        return x if self.upsample is None else self.upsample(x)


class TokenEmbed(nn.Module):
    """diffusers' UVit2DConvEmbed: token table, RMSNorm, 1x1 conv; (B, H, W) -> (B, C, H, W)."""

    def __init__(self, c: UViT2DConfig) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(c.vocab_size, c.in_channels)
        self.layer_norm = RMSNorm(c.in_channels, c.layer_norm_eps, c.ln_elementwise_affine)
        self.conv = nn.Conv2d(c.in_channels, c.block_out_channels, kernel_size=1, bias=c.use_bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(self.embeddings(tokens))  # (B, H, W, in_channels)
        return self.conv(x.permute(0, 3, 1, 2))


class CondEmbed(nn.Module):
    """diffusers' TimestepEmbedding: Linear, SiLU, Linear."""

    def __init__(self, c: UViT2DConfig) -> None:
        super().__init__()
        d_in = c.cond_embed_dim + c.micro_cond_embed_dim
        self.linear_1 = nn.Linear(d_in, c.hidden_size, bias=c.use_bias)
        self.linear_2 = nn.Linear(c.hidden_size, c.hidden_size, bias=c.use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class MlmLayer(nn.Module):
    """diffusers' ConvMlmLayer: 1x1 conv, RMSNorm, 1x1 conv to one logit per code."""

    def __init__(self, c: UViT2DConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c.block_out_channels, c.in_channels, kernel_size=1, bias=c.use_bias)
        self.layer_norm = RMSNorm(c.in_channels, c.layer_norm_eps, c.ln_elementwise_affine)
        self.conv2 = nn.Conv2d(c.in_channels, c.codebook_size, kernel_size=1, bias=c.use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv2(x)


def micro_embedding(micro: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, n) micro-conditions -> (B, n * dim): each value v as [cos(v f), sin(v f)] with
    f_k = 10000^(-k / (dim/2)), k < dim/2, in float32 (diffusers' get_timestep_embedding with
    flip_sin_to_cos and no frequency shift)."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=micro.device)
    freqs = torch.exp(-math.log(10000) * k / half)  # (half,)
    angles = micro.flatten().float()[:, None] * freqs  # (B*n, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).reshape(micro.shape[0], -1)


# --- main class ---


class UViT2D(nn.Module):
    """diffusers' UVit2DModel for inference, with its parameter names (its state dict loads with
    strict=True as it is)."""

    def __init__(self, config: UViT2DConfig) -> None:
        super().__init__()
        self.config = c = config
        self.encoder_proj = nn.Linear(c.encoder_hidden_size, c.hidden_size, bias=c.use_bias)
        self.encoder_proj_layer_norm = RMSNorm(
            c.hidden_size, c.layer_norm_eps, c.ln_elementwise_affine
        )
        self.embed = TokenEmbed(c)
        self.cond_embed = CondEmbed(c)
        self.down_block = UViTBlock(c, downsample=c.downsample, upsample=False)
        C, h = c.block_out_channels, c.hidden_size
        self.project_to_hidden_norm = RMSNorm(C, c.layer_norm_eps, c.ln_elementwise_affine)
        self.project_to_hidden = nn.Linear(C, h, bias=c.use_bias)
        self.transformer_layers = nn.ModuleList(
            TransformerLayer(c) for _ in range(c.num_hidden_layers)
        )
        self.project_from_hidden_norm = RMSNorm(h, c.layer_norm_eps, c.ln_elementwise_affine)
        self.project_from_hidden = nn.Linear(h, C, bias=c.use_bias)
        self.up_block = UViTBlock(c, downsample=False, upsample=c.upsample)
        self.mlm_layer = MlmLayer(c)

    def forward(
        self,
        tokens: torch.Tensor,
        text: torch.Tensor,
        pooled: torch.Tensor,
        micro: torch.Tensor,
    ) -> torch.Tensor:
        """Logits (B, codebook_size, h, w) over the codes at every position of `tokens` (B, h, w)
        (codes, or the mask token), given the text's hidden states (B, L, encoder_hidden_size),
        its pooled embedding (B, cond_embed_dim) and the micro-conditions (B, n_micro_conds)."""
        c = self.config
        dtype = self.encoder_proj.weight.dtype
        text = self.encoder_proj_layer_norm(self.encoder_proj(text.to(dtype)))  # (B, L, hidden)
        micro = micro_embedding(micro, c.micro_cond_encode_dim)  # (B, micro_cond_embed_dim)
        cond = self.cond_embed(torch.cat([pooled.to(dtype), micro.to(dtype)], dim=1))  # (B, hidden)

        x = self.down_block(self.embed(tokens), text, cond)  # (B, C, H, W)
        B, C, H, W = x.shape
        x = self.project_to_hidden(self.project_to_hidden_norm(x.flatten(2).transpose(1, 2)))
        for layer in self.transformer_layers:  # (B, H*W, hidden)
            x = layer(x, text, cond)
        x = self.project_from_hidden(self.project_from_hidden_norm(x))  # (B, H*W, C)
        x = self.up_block(x.transpose(1, 2).reshape(B, C, H, W), text, cond)
        return self.mlm_layer(x)


# --- the masked prior ---


def micro_conditions(
    width: int, height: int, crop: tuple[int, int] = (0, 0), aesthetic: float = 6.0
) -> torch.Tensor:
    """(1, 5) float32: aMUSEd's micro-conditions in its pipeline's order, [width, height, crop
    top, crop left, aesthetic score]: the original image's size (width first), the crop's
    (top, left) corner (its training script's order), the LAION aesthetic score. The pipeline's
    defaults: the image's own size, no crop, score 6."""
    return torch.tensor([[width, height, crop[0], crop[1], aesthetic]], dtype=torch.float32)


# The pad token of a prior loaded without its tokenizer's special_tokens_map.json (amused_text.py)
PAD_TOKEN = "!"


class AmusedPrior:
    """A loaded aMUSEd U-ViT behind the masked-model interface of vqclip's masked resampler.

    The text is a one-class condition: label 0 is the prompt's text (`set_text`), None the empty
    prompt's (`set_unconditional`). The resampler's class guidance S (`--prior-class-guidance`)
    then computes uncond + S (cond - uncond): S is the pipeline's `guidance_scale` (10 there).
    `class_names` is empty: the prompt is not a class to choose, the caller passes label 0."""

    def __init__(self, model: UViT2D, source: str, mask_token: int | None = None) -> None:
        c = model.config
        self.model = model
        self.source = source
        self.n_codes = c.codebook_size
        self.mask_token = c.vocab_size - 1 if mask_token is None else mask_token
        if not c.codebook_size <= self.mask_token < c.vocab_size:
            raise ConfigError(
                f"aMUSEd {source}: mask token {self.mask_token} is not among the "
                f"{c.vocab_size - c.codebook_size} tokens after the {c.codebook_size} codes"
            )
        self.window = (c.sample_size, c.sample_size)
        self.n_classes = 1
        self.class_names: tuple[str, ...] = ()
        # aMUSEd's text encoder (a vqclip CLIP holding CLIP L/14's text tower), loaded with the
        # prior from the registry: it turns a run's prompt into the text (amused_text.py)
        self.text_encoder: Any = None
        self.pad_token = PAD_TOKEN  # its tokenizer's, set by the loader from the repository
        # label 0 (the prompt) and None (the empty prompt): (text, pooled, micro), batch 1 each
        self._texts: dict[int | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def default_micro(self) -> torch.Tensor:
        """The pipeline's micro-conditions for its default image size (the window in pixels)."""
        h, w = self.window
        return micro_conditions(w * VQ_FACTOR, h * VQ_FACTOR)

    def _set(
        self,
        label: int | None,
        text: torch.Tensor,
        pooled: torch.Tensor,
        micro: torch.Tensor | None,
    ) -> None:
        c = self.model.config
        micro = self.default_micro() if micro is None else micro
        expected = (
            ("hidden states", text, (1, None, c.encoder_hidden_size)),  # None: any length
            ("pooled embedding", pooled, (1, c.cond_embed_dim)),
            ("micro-conditions", micro, (1, c.n_micro_conds)),
        )
        for what, t, shape in expected:
            fits = t.ndim == len(shape) and all(
                n in (None, m) for n, m in zip(shape, t.shape, strict=True)
            )
            if not fits or not t.is_floating_point():
                raise ConfigError(
                    f"aMUSEd {self.source}: the text's {what} must be a float tensor of shape "
                    f"{shape} (None: any), got {tuple(t.shape)} {t.dtype}"
                )
        other = self._texts.get(None if label == 0 else 0)
        if other is not None and other[0].shape[1] != text.shape[1]:
            raise ConfigError(
                f"aMUSEd {self.source}: a text of {text.shape[1]} tokens beside one of "
                f"{other[0].shape[1]}: the prompt and the empty prompt must have the same length"
            )
        self._texts[label] = (text.detach(), pooled.detach(), micro.detach().float())

    def set_text(
        self, text: torch.Tensor, pooled: torch.Tensor, micro: torch.Tensor | None = None
    ) -> None:
        """The prompt's condition (label 0): CLIP's penultimate hidden states (1, 77, 768), its
        projected pooled embedding (1, 768) and the micro-conditions (1, 5) (default: the
        pipeline's, `default_micro`)."""
        self._set(0, text, pooled, micro)

    def set_unconditional(
        self, text: torch.Tensor, pooled: torch.Tensor, micro: torch.Tensor | None = None
    ) -> None:
        """The condition without the prompt (label None): the empty prompt's text, as the
        pipeline's classifier-free guidance uses it (same micro-conditions as the prompt's)."""
        self._set(None, text, pooled, micro)

    def _rows(self, labels: Sequence[int | None], batch: int) -> list[int | None]:
        if len(labels) != batch:
            raise ConfigError(f"{len(labels)} labels for a batch of {batch} grids")
        rows: list[int | None] = []
        for label in labels:
            if label is not None:
                try:
                    index = operator.index(label)
                except TypeError:
                    index = -1
                if isinstance(label, bool) or index != 0:
                    raise ConfigError(
                        f"aMUSEd label {label!r}: 0 (the prompt) or None (the empty prompt)",
                        field="prior_class",
                    )
                label = 0
            if label not in self._texts:
                which = "set_text (the prompt)" if label == 0 else "set_unconditional ('')"
                raise ConfigError(f"aMUSEd {self.source}: no text for label {label}: call {which}")
            rows.append(label)
        return rows

    def logits(self, tokens: torch.Tensor, labels: Sequence[int | None]) -> torch.Tensor:
        """Float32 logits (B, h*w, n_codes) over the codes from `tokens` (B, h*w), the window
        row-major (codes, or `mask_token` where unknown), each row conditioned on its label's
        text; computed in the model's dtype, without gradients."""
        h, w = self.window
        if tokens.dim() != 2 or tokens.shape[1] != h * w:
            raise ConfigError(
                f"aMUSEd {self.source} reads {h}x{w} grids as (B, {h * w}) tokens, "
                f"got {tuple(tokens.shape)}"
            )
        bad = (tokens < 0) | ((tokens >= self.n_codes) & (tokens != self.mask_token))
        if bool(bad.any()):
            raise ConfigError(
                f"aMUSEd tokens must be codes 0..{self.n_codes - 1} or the mask token "
                f"{self.mask_token}, got {int(tokens[bad][0])}"
            )
        rows = self._rows(labels, tokens.shape[0])
        device = self.model.encoder_proj.weight.device
        text, pooled, micro = (
            torch.cat([self._texts[r][i] for r in rows]).to(device) for i in range(3)
        )
        with torch.no_grad():
            grid = tokens.to(device=device, dtype=torch.long).view(-1, h, w)
            out = self.model(grid, text, pooled, micro)  # (B, K, h, w)
        return out.flatten(2).transpose(1, 2).float()  # (B, h*w, K)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> AmusedPrior:
        """Moves and/or casts the U-ViT; returns self."""
        if dtype is not None and not dtype.is_floating_point:
            raise ConfigError(f"aMUSEd runs in a floating-point dtype, not {dtype}")
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        if moves:
            self.model.to(**moves)
        return self


# --- aMUSEd's sampler rule (diffusers' AmusedScheduler), for vqclip's masked sampler ---

# The pipeline's Gumbel temperatures on the draws' confidence, falling linearly over the rounds.
TEMPERATURES = (2.0, 0.0)


def amused_left(
    total: torch.Tensor, remaining: torch.Tensor, step: int, steps: int
) -> torch.Tensor:
    """(B, 1) tokens left masked after round `step` (0-based) of `steps`, as AmusedScheduler
    counts them: floor(total cos(pi/2 (step + 1) / steps)) in float32 (`total`: the tokens
    masked at the start, its seq_len x starting_mask_ratio), at most `remaining` - 1 (a round
    keeps at least one draw) and at least 1 (the last token waits for the last round); none
    after the last round."""
    if step + 1 >= steps:
        return torch.zeros_like(total)
    ratio = torch.tensor(step + 1) / steps  # float32, as theirs
    left = (total * torch.cos(ratio * math.pi / 2)).floor()
    return left.minimum(remaining.to(left.dtype) - 1).clamp(min=1)


def amused_confidence(
    p_drawn: torch.Tensor, step: int, steps: int, generator: torch.Generator
) -> torch.Tensor:
    """(B, n) confidence in each drawn token, as AmusedScheduler's mask_by_random_topk: log p
    (p clamped at 1e-20) plus standard Gumbel noise times the round's temperature,
    linspace(2, 0, steps)[step]. The noise is float32, from the CPU `generator`, one value per
    position (theirs draws it for the whole sequence); none at the last round, where theirs
    keeps every draw without ranking them."""
    log_p = torch.log(p_drawn.clamp(1e-20))
    if step + 1 >= steps:
        return log_p
    temperature = torch.linspace(*TEMPERATURES, steps)[step]
    u = torch.zeros(p_drawn.shape).uniform_(0, 1, generator=generator)
    gumbel = -torch.log((-torch.log(u.clamp(1e-20))).clamp(1e-20))
    return log_p + (temperature * gumbel).to(log_p.device)


# --- loading ---


def scheduler_mask_token(path: str | os.PathLike) -> int | None:
    """The pipeline's mask token: `mask_token_id` of a diffusers scheduler_config.json; None
    when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    value = read_json(path).get("mask_token_id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: mask_token_id {value!r} is not an integer")
    return value


def load_amused(
    path: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    mask_token: int | None = None,
) -> AmusedPrior:
    """aMUSEd's transformer (a diffusers `transformer/` folder, or its safetensors file with the
    config.json beside it or given as `config`) as a float32, eval, frozen prior on the CPU.
    The mask token is `mask_token`, else the scheduler config's beside the folder, else
    vocab_size - 1. Raises CheckpointError naming every missing, unexpected or mis-shaped
    weight."""
    weights, config_path = diffusers_weights(path, WEIGHT_FILES)
    config_path = config_path if config is None else Path(config)
    model_config = UViT2DConfig.from_dict(read_json(config_path), source=str(config_path))
    state_dict = read_safetensors(weights)
    with torch.device("meta"):
        model = UViT2D(model_config)
    model.to_empty(device="cpu")  # float32 storage; load_strict copies (and casts) into it
    load_strict(model, state_dict, source=str(weights))
    model.float().eval().requires_grad_(False)
    if mask_token is None:
        mask_token = scheduler_mask_token(
            weights.parent.parent / "scheduler" / "scheduler_config.json"
        )
    return AmusedPrior(model, str(weights), mask_token)
