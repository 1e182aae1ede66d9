"""The VQGAN autoencoder for inference: taming's VQModel / GumbelVQ without the training loss.

Submodule names are taming's (`encoder`, `decoder`, `quant_conv`, `post_quant_conv`,
`quantize`), so a taming state dict with its `loss.*` keys removed loads with strict=True.
"""

from __future__ import annotations

import torch
from torch import nn

from vqclip.errors import ConfigError
from vqclip.vqgan.config import VQGANConfig
from vqclip.vqgan.modules import Decoder, Encoder
from vqclip.vqgan.quantize import CodebookQuantizer, GumbelQuantizer, VectorQuantizer


def _check_channels(t: torch.Tensor, channels: int, what: str) -> None:
    if t.ndim != 4 or t.shape[1] != channels:
        raise ConfigError(f"{what} must have shape (B, {channels}, H, W), got {tuple(t.shape)}")


class VQGAN(nn.Module):
    """Encoder, codebook quantiser and decoder of a taming-transformers VQGAN.

    Images are in [-1, 1]; a latent grid has `downsample_factor` times fewer pixels per side.
    """

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, kernel_size=1)
        self.quantize: CodebookQuantizer
        if config.quantizer == "gumbel":
            self.quantize = GumbelQuantizer(config.z_channels, config.embed_dim, config.n_embed)
        else:
            self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors, (n_embed, embed_dim)."""
        return self.quantize.codebook

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) in [-1, 1] -> z (B, embed_dim, H/f, W/f), before quantisation."""
        _check_channels(x, self.config.in_channels, "image")
        return self.quant_conv(self.encoder(x))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Latents (B, embed_dim, h, w) -> image (B, 3, h*f, w*f), roughly in [-1, 1]."""
        _check_channels(z_q, self.config.embed_dim, "latent")
        return self.decoder(self.post_quant_conv(z_q))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction: decode(quantize(encode(x)))."""
        z_q, _ = self.quantize(self.encode(x))
        return self.decode(z_q)
