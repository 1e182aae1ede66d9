"""taming's token transformer (its minGPT, `taming.modules.transformer.mingpt.GPT`) for inference.

Submodule and parameter names are taming's (`tok_emb`, `pos_emb`, `blocks.N.{ln1, ln2, attn.{key,
query, value, proj}, mlp.0, mlp.2}`, `ln_f`, `head`), and so is the causal mask buffer
`blocks.N.attn.mask`, so the `transformer.*` weights of a Net2NetTransformer checkpoint load
with strict=True. The mask lets the first `n_unmasked` positions (a conditioning prefix) see each
other, as taming's does. Unlike taming's, `forward` also takes soft token embeddings: the prior
loss feeds the loop's soft code assignment p @ tok_emb, which is differentiable in z.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from vqclip.errors import ConfigError


@dataclass(frozen=True)
class TransformerConfig:
    """The sizes of a taming GPT: `vocab_size` tokens (image codes, and for class-conditional
    models the class labels share the table), `block_size` positions, `n_layer` blocks of
    `n_head` heads over `n_embd` channels; the first `n_unmasked` positions are not causal."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    n_unmasked: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            low = 0 if name == "n_unmasked" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"transformer {name}={value!r}: expected an integer >= {low}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"transformer n_embd={self.n_embd} is not divisible by n_head={self.n_head}"
            )
        if self.n_unmasked > self.block_size:
            raise ConfigError(
                f"transformer n_unmasked={self.n_unmasked} exceeds block_size={self.block_size}"
            )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def causal_mask(block_size: int, n_unmasked: int) -> torch.Tensor:
    """(1, 1, T, T): 1 where position i may attend to j (j <= i, or both in the prefix)."""
    mask = torch.tril(torch.ones(block_size, block_size))
    if n_unmasked:
        mask[:n_unmasked, :n_unmasked] = 1
    return mask.view(1, 1, block_size, block_size)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.key = nn.Linear(config.n_embd, config.n_embd)
        self.query = nn.Linear(config.n_embd, config.n_embd)
        self.value = nn.Linear(config.n_embd, config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head
        # A persistent buffer, as in taming: its checkpoints carry it, and it tells n_unmasked.
        self.register_buffer("mask", causal_mask(config.block_size, config.n_unmasked))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cached(x, None)[0]

    def cached(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attention of the T new positions x (B, T, C) over `past` (the keys and values of the
        positions before them, (B, nh, S, hs) each, or None) and themselves; returns the output
        and the keys and values of all S + T positions."""
        B, T, C = x.shape
        heads = (B, T, self.n_head, C // self.n_head)
        k = self.key(x).view(heads).transpose(1, 2)  # (B, nh, T, hs)
        q = self.query(x).view(heads).transpose(1, 2)
        v = self.value(x).view(heads).transpose(1, 2)
        S = 0
        if past is not None:
            S = past[0].shape[2]
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])  # (B, nh, T, S + T)
        mask = self.mask[:, :, S : S + T, : S + T]
        att = att.masked_fill(mask == 0, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.proj(y), (k, v)


class Block(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        # Indices 0 and 2 are taming's parameter names (mlp.0, mlp.2); 3 was its dropout.
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TokenTransformer(nn.Module):
    """taming's GPT without dropout (inference and the prior loss need none)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd))
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(
        self, idx: torch.Tensor | None = None, embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size) of the next token at each of T positions.

        `idx` (B, T1) are token indices; `embeddings` (B, T2, n_embd) are inputs already in the
        embedding space (soft tokens), placed after the indexed ones. Either may be None.
        """
        parts = []
        if idx is not None:
            parts.append(self.tok_emb(idx))
        if embeddings is not None:
            parts.append(embeddings)
        if not parts:
            raise ConfigError("the transformer needs token indices or embeddings")
        x = torch.cat(parts, dim=1)
        T = x.shape[1]
        if self.config.block_size < T:
            raise ConfigError(
                f"sequence of {T} tokens is longer than the transformer's block_size "
                f"({self.config.block_size})"
            )
        x = self.blocks(x + self.pos_emb[:, :T])
        return self.head(self.ln_f(x))

    def extend(
        self, idx: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Logits (B, T, vocab_size) after the tokens `idx` (B, T) that follow the positions
        cached in `past` (one (keys, values) pair per block, from an earlier call; None: none),
        and the cache extended by them: sampling token by token without recomputing the
        sequence. Equals `forward` on the whole sequence."""
        S = 0 if past is None else past[0][0].shape[2]
        T = idx.shape[1]
        if self.config.block_size < S + T:
            raise ConfigError(
                f"sequence of {S + T} tokens is longer than the transformer's block_size "
                f"({self.config.block_size})"
            )
        x = self.tok_emb(idx) + self.pos_emb[:, S : S + T]
        cache = []
        for i, block in enumerate(self.blocks):
            h, kv = block.attn.cached(block.ln1(x), None if past is None else past[i])
            x = x + h
            x = x + block.mlp(block.ln2(x))
            cache.append(kv)
        return self.head(self.ln_f(x)), cache
