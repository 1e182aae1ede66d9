"""CLIP with a ViT or ResNet image tower (Radford et al. 2021, https://arxiv.org/abs/2103.00020).

Parameter names are exactly those of OpenAI's and OpenCLIP's CLIP state dicts, so their
checkpoints load strictly (the ResNet tower is in `vqclip.clip.resnet`). Attention keeps
nn.MultiheadAttention's parameter names (in_proj_weight, in_proj_bias, out_proj) but computes
with scaled_dot_product_attention on batch-first tensors.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from vqclip.attention import attention
from vqclip.clip.config import CLIPConfig
from vqclip.clip.resnet import ModifiedResNet
from vqclip.clip.tokenizer import tokenize
from vqclip.errors import ConfigError

QUICK_GELU = 1.702


class QuickGELU(nn.Module):
    """OpenAI's GELU approximation x * sigmoid(1.702 x); their weights were trained with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(QUICK_GELU * x)


class FoldedQuickGELU(nn.Module):
    """QuickGELU whose 1.702 lives in the linear layers around it (`fold_quick_gelu`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


# (parameter, factor) of an MLP whose QuickGELU is folded: silu(1.702 h) / 1.702 = quick_gelu(h)
_FOLDED = (
    ("c_fc.weight", QUICK_GELU),
    ("c_fc.bias", QUICK_GELU),
    ("c_proj.weight", 1 / QUICK_GELU),
)


def _unfold_for_saving(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    for name, factor in _FOLDED:
        if (key := prefix + name) in state_dict:
            value = state_dict[key]
            state_dict[key] = (value.detach().float() / factor).to(value.dtype)


def _fold_when_loading(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    for name, factor in _FOLDED:
        if (key := prefix + name) in state_dict and isinstance(state_dict[key], torch.Tensor):
            state_dict[key] = state_dict[key].float() * factor  # copied into the parameter's dtype


def fold_quick_gelu(model: nn.Module) -> int:
    """Fold each QuickGELU MLP's 1.702 into its linear layers, in place: c_fc's weight and bias
    times 1.702 and c_proj's weight over 1.702 make the activation a plain silu, since
    silu(1.702 h) / 1.702 = h * sigmoid(1.702 h). The same function with one fused kernel each
    way instead of four elementwise passes over the MLP's hidden activations (1.075x a 128x128
    step with 8 cutouts and 1.033x at 256/32, bf16 on a 2-core CPU). `state_dict()` still gives
    the checkpoint's values (to the last bit's rounding) and `load_state_dict` takes them.
    Returns how many MLPs were folded: 0 for a model already folded."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Sequential) and isinstance(
            getattr(module, "gelu", None), QuickGELU
        ):
            with torch.no_grad():
                module.c_fc.weight.mul_(QUICK_GELU)
                module.c_fc.bias.mul_(QUICK_GELU)
                module.c_proj.weight.div_(QUICK_GELU)
            module.gelu = FoldedQuickGELU()
            module.register_state_dict_post_hook(_unfold_for_saving)
            module.register_load_state_dict_pre_hook(_fold_when_loading)
            count += 1
    return count


class SelfAttention(nn.Module):
    """Multi-head self-attention, causal for the text tower."""

    def __init__(self, width: int, heads: int, *, causal: bool) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3C)
        qkv = qkv.view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, nh, N, hs)
        y = attention(q, k, v, causal=self.causal)  # (B, nh, N, hs)
        y = y.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.out_proj(y)


class ResidualBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, *, causal: bool, quick_gelu: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, causal=causal)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(width, 4 * width),
                gelu=QuickGELU() if quick_gelu else nn.GELU(),
                c_proj=nn.Linear(4 * width, width),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(
        self, width: int, layers: int, heads: int, *, causal: bool, quick_gelu: bool
    ) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualBlock(width, heads, causal=causal, quick_gelu=quick_gelu) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    """Patchify, prepend a class token, transform, and project the class token."""

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        width = config.vision_width
        scale = width**-0.5
        self.patch_size = config.patch_size
        self.conv1 = nn.Conv2d(
            3, width, kernel_size=config.patch_size, stride=config.patch_size, bias=False
        )
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn(config.grid_size**2 + 1, width)
        )
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(
            width,
            config.vision_layers,
            config.vision_heads,
            causal=False,
            quick_gelu=config.quick_gelu,
        )
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, config.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # conv1 has stride == kernel size: it is a matmul over non-overlapping patches, and as
        # one its backward pass is ~7x faster on CPU than the convolution's (measured).
        B, _, H, W = x.shape
        p = self.patch_size
        x = x.reshape(B, 3, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, g, g, 3, p, p)
        x = F.linear(x.reshape(B, (H // p) * (W // p), 3 * p * p), self.conv1.weight.flatten(1))
        # x: (B, g*g, C)
        # Casts keep this working under autocast, where conv1 returns half precision.
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (B, 1+g*g, C)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj  # (B, embed_dim)


def _init_transformer(transformer: Transformer, width: int, layers: int) -> None:
    proj_std = width**-0.5 * (2 * layers) ** -0.5
    for block in transformer.resblocks:
        nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


class CLIP(nn.Module):
    """A CLIP (ViT or ResNet image tower): `encode_image` for [0, 1] images, `encode_text` for
    token ids.

    Embeddings are returned un-normalised; divide by their norm before comparing.
    """

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.visual: nn.Module
        if config.is_resnet:
            self.visual = ModifiedResNet(
                config.vision_layers,
                config.embed_dim,
                config.vision_heads,
                config.image_size,
                config.vision_width,
            )
        else:
            self.visual = VisionTransformer(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(
            torch.empty(config.context_length, config.text_width)
        )
        self.transformer = Transformer(
            config.text_width,
            config.text_layers,
            config.text_heads,
            causal=True,
            quick_gelu=config.quick_gelu,
        )
        self.ln_final = nn.LayerNorm(config.text_width)
        self.text_projection = nn.Parameter(torch.empty(config.text_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # Derived from the config, so not part of the state dict (OpenAI's has no such keys).
        self.register_buffer("pixel_mean", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.empty(1, 3, 1, 1), persistent=False)
        self.reset_pixel_stats()
        self._init_parameters()

    def _init_parameters(self) -> None:
        # OpenCLIP's init, so that a random model (as in tests) gives well-scaled outputs.
        c = self.config
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=c.text_width**-0.5)
        _init_transformer(self.transformer, c.text_width, c.text_layers)
        if not c.is_resnet:  # the ResNet initialises itself
            _init_transformer(self.visual.transformer, c.vision_width, c.vision_layers)

    def reset_pixel_stats(self) -> None:
        """Fill the mean/std buffers from the config (needed after `to_empty`)."""
        with torch.no_grad():
            self.pixel_mean.copy_(torch.tensor(self.config.mean).view(1, 3, 1, 1))
            self.pixel_std.copy_(torch.tensor(self.config.std).view(1, 3, 1, 1))

    @property
    def input_size(self) -> int:
        """Side in pixels of the square images `encode_image` accepts."""
        return self.config.image_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.config.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.config.std

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images in [0, 1] of shape (B, 3, S, S), S = `input_size`, -> (B, embed_dim).

        CLIP's mean/std normalisation is applied here, so pass plain [0, 1] pixels. Gradients
        flow back to `images`.
        """
        size = self.config.image_size
        if not isinstance(images, torch.Tensor) or tuple(images.shape)[1:] != (3, size, size):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ConfigError(
                f"CLIP.encode_image expects images of shape (B, 3, {size}, {size}) in [0, 1], "
                f"got {got}; resize the cutouts to the model's input_size ({size}) first"
            )
        dtype = self.visual.conv1.weight.dtype
        x = (images.to(dtype) - self.pixel_mean.to(dtype)) / self.pixel_std.to(dtype)
        return self.visual(x)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embed token ids (B, context_length) from `tokenize` -> (B, embed_dim).

        The sequence is pooled at its end-of-text token, the largest id in each row.
        """
        length, vocab = self.config.context_length, self.config.vocab_size
        if (
            not isinstance(tokens, torch.Tensor)
            or tokens.ndim != 2
            or tokens.shape[1] != length
            or tokens.is_floating_point()
        ):
            got = (
                f"{tuple(tokens.shape)} {tokens.dtype}"
                if isinstance(tokens, torch.Tensor)
                else type(tokens).__name__
            )
            raise ConfigError(
                f"CLIP.encode_text expects integer token ids of shape (B, {length}), got {got}; "
                "use vqclip.clip.tokenize"
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab):
            raise ConfigError(
                f"CLIP.encode_text: token ids must lie in [0, {vocab}), got "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        x = self.token_embedding(tokens) + self.positional_embedding  # (B, L, C)
        x = self.ln_final(self.transformer(x))
        eot = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection

    def tokenize(self, texts: str | list[str]) -> torch.Tensor:
        """Token ids (N, context_length) for this model, on the CPU."""
        return tokenize(texts, context_length=self.config.context_length)

    def encode_text_str(self, texts: str | list[str]) -> torch.Tensor:
        """Tokenize and embed strings -> (N, embed_dim)."""
        return self.encode_text(self.tokenize(texts).to(self.token_embedding.weight.device))


def build_empty(config: CLIPConfig, device: str | torch.device = "cpu") -> CLIP:
    """A CLIP with uninitialised parameters on `device`, to load weights into without paying
    for a random init of hundreds of millions of parameters."""
    with torch.device("meta"):
        model = CLIP(config)
    model.to_empty(device=device)
    model.reset_pixel_stats()
    return model
