"""Scaled dot-product attention for the VQGAN and CLIP blocks.

`torch.nn.functional.scaled_dot_product_attention` everywhere, except in bf16/fp16 on a CPU:
there PyTorch's flash kernel was measured 1.6-4.5x slower (forward + backward) than the plain
matmul-softmax-matmul at the sequence lengths of these models (CLIP's 50-577 tokens, the VQGAN's
256-1024 latent positions), and the loop runs a backward pass through every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (B, heads, N, d) tensors; causal masks future keys."""
    if q.device.type != "cpu" or q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, nh, N, N)
    if causal:
        n = q.shape[-2]
        future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (B, nh, N, d)
