"""The toy token prior: taming's GPT (`vqclip.prior.TokenTransformer`) trained on the toy VQGAN's
codes of clean world images, unconditional (one start token, as taming's SOSProvider).

A pool of world images is rendered and encoded once (encoding costs more than a step). Half of
each batch feeds the GPT soft tokens, the encoder's latents as soft code assignments
softmax(-||z - e||^2 / u) with u uniform in (0, 2) squared-distance units (for the toy codebook,
0 to 23 times its nearest-neighbour distance: from sharp to much blurred), because the loop's
prior loss could feed it soft tokens (`vqclip.prior.loss`, context "soft"); the targets are
always the hard codes. Run through `python -m research.toy.train --parts prior`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vqclip.prior.io import Condition, TokenPrior
from vqclip.prior.loss import nearest_neighbour_scale, soft_assignment
from vqclip.prior.transformer import TokenTransformer, TransformerConfig
from vqclip.toy.world import SHAPES, sample_images
from vqclip.vqgan import VQGAN
from vqclip.vqgan.quantize import nearest_code

SOS = 0  # taming's default sos_token: it shares the table with code 0


@torch.no_grad()
def encode_pool(
    vqgan: VQGAN,
    n: int,
    seed: int,
    batch: int = 256,
    *,
    with_shapes: bool = False,
    degrade=None,
) -> tuple[torch.Tensor, ...]:
    """Latents (n, C, h, w) and codes (n, h, w) of n clean world images, half of them mirrored
    left to right (the world is symmetric, the VQGAN's codes need not be); with `with_shapes`
    also each image's shape (n,), an index into `vqclip.toy.world.SHAPES`; with `degrade` (a
    function of images and a generator) also the codes (n, h, w) of each image degraded."""
    g = torch.Generator().manual_seed(seed)
    zs, codes, shapes, worse = [], [], [], []
    for start in range(0, n, batch):
        images, scenes = sample_images(min(batch, n - start), g)
        flip = torch.rand(len(images), generator=g) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        z = vqgan.encode(images * 2 - 1)
        zs.append(z)
        codes.append(nearest_code(z, vqgan.codebook))
        shapes.append(torch.tensor([SHAPES.index(s.shape) for s in scenes]))
        if degrade is not None:
            bad = vqgan.encode(degrade(images, g) * 2 - 1)
            worse.append(nearest_code(bad, vqgan.codebook))
    out = (torch.cat(zs), torch.cat(codes))
    if with_shapes:
        out = (*out, torch.cat(shapes))
    return (*out, torch.cat(worse)) if degrade is not None else out


def train_prior(
    vqgan: VQGAN,
    *,
    steps: int = 800,
    batch: int = 16,
    pool: int = 4096,
    seed: int = 0,
    lr: float = 1e-3,
    warmup: int = 100,
    n_layer: int = 3,
    n_head: int = 4,
    n_embd: int = 64,
    soft_share: float = 0.5,
    progress: bool = True,
) -> TokenPrior:
    torch.manual_seed(seed)
    vqgan = vqgan.float().eval()
    z_pool, code_pool = encode_pool(vqgan, pool, seed)
    _, h, w = code_pool.shape
    codebook = vqgan.codebook.detach().float()
    K = codebook.shape[0]
    scale = nearest_neighbour_scale(codebook)
    config = TransformerConfig(
        vocab_size=K, block_size=h * w, n_layer=n_layer, n_head=n_head, n_embd=n_embd
    )
    model = TokenTransformer(config)
    model.apply(_init_weights)
    opt = adamw(model, lr)
    g = torch.Generator().manual_seed(seed + 1)
    bar = tqdm(range(steps), desc="prior", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * _schedule(step, steps, warmup)
        idx = torch.randint(pool, (batch,), generator=g)
        codes = code_pool[idx].view(batch, -1)  # (B, n)
        inputs = model.tok_emb(codes[:, :-1])  # (B, n-1, E)
        n_soft = int(batch * soft_share)
        if n_soft:
            # Soft tokens as the loop feeds them: p ** (scale / temp) renormalised is the
            # assignment at temperature temp / scale = u in (0, 2), squared-distance units.
            temp = scale * torch.rand(n_soft, 1, 1, 1, generator=g) * 2
            p = soft_assignment(z_pool[idx[:n_soft]], codebook, 1.0)
            p = F.softmax(torch.log(p + 1e-30) / temp.clamp(min=1e-3) * scale, dim=-1)
            soft = p.reshape(n_soft, -1, K)[:, :-1] @ model.tok_emb.weight
            inputs = torch.cat([soft, inputs[n_soft:]])
        sos = torch.full((batch, 1), SOS, dtype=torch.long)
        logits = model(sos, inputs)  # (B, n, K)
        loss = F.cross_entropy(logits.reshape(-1, K), codes.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval().requires_grad_(False)
    return TokenPrior(model, Condition("sos", sos_token=SOS), "toy prior")


def adamw(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    """minGPT's optimiser: weight decay on the matrices, none on biases, norms and positions."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "pos_emb"]
    other = [p for n, p in model.named_parameters() if p.ndim < 2 or n == "pos_emb"]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )


def _schedule(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _init_weights(module: torch.nn.Module) -> None:
    """minGPT's initialisation."""
    if isinstance(module, torch.nn.Linear | torch.nn.Embedding):
        module.weight.data.normal_(0.0, 0.02)
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            module.bias.data.zero_()


@torch.no_grad()
def held_out_nll(prior: TokenPrior, vqgan: VQGAN, n: int = 512, seed: int = 99) -> float:
    """Nats per token of the codes of n fresh world images (hard tokens)."""
    _, codes = encode_pool(vqgan.float().eval(), n, seed)
    codes = codes.view(n, -1)
    sos = torch.full((n, 1), prior.condition.sos_token, dtype=torch.long)
    logits = prior.transformer(torch.cat([sos, codes[:, :-1]], 1))
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1)))
