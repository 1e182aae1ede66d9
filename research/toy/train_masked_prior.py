"""A masked (bidirectional) token prior for the toy world: the GPT of `vqclip.prior` with every
position seeing every other (`n_unmasked` = the block), trained as MaskGIT is on the toy VQGAN's
codes of clean world images: a share r = cos(pi/2 u), u ~ U(0, 1), of each grid's tokens is
replaced by the mask token and predicted from the rest.

The causal toy prior (train_prior.py) sees only the tokens above and left of a position, so it
copies what the grid already holds; this one sees the whole grid, so a token can be judged (and
redrawn) from its neighbours on every side, which is what the loop's resampling asks. Because the
loop's grids are not clean, a small share of the visible tokens (up to `noise`) is also replaced
by random codes and predicted back: the model learns to name a token that does not belong.

Run: `python -m research.toy.train_masked_prior --out DIR/toy_masked_prior.safetensors`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from research.toy.train_prior import _init_weights, _schedule, adamw, encode_pool
from vqclip.prior.io import Condition, TokenPrior, load_prior, save_prior
from vqclip.prior.transformer import TokenTransformer, TransformerConfig
from vqclip.toy.models import load_toy_models


def corrupt(
    codes: torch.Tensor, n_codes: int, noise: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, n) and the positions (B, n) the loss reads: masked ones (a cosine-scheduled
    share per grid, at least one) and randomly replaced ones (up to `noise` of the rest)."""
    B, n = codes.shape
    ratio = torch.cos(math.pi / 2 * torch.rand(B, 1, generator=g))  # (B, 1) in (0, 1]
    scores = torch.rand(B, n, generator=g)
    k = (ratio * n).ceil().clamp(min=1)
    ranks = scores.argsort(1).argsort(1)
    masked = ranks < k
    swap = (~masked) & (torch.rand(B, n, generator=g) < noise * torch.rand(B, 1, generator=g))
    inputs = torch.where(masked, n_codes, codes)  # the mask token is n_codes
    inputs = torch.where(swap, torch.randint(n_codes, (B, n), generator=g), inputs)
    return inputs, masked | swap


def train_masked_prior(
    *,
    steps: int,
    batch: int = 32,
    pool: int = 16384,
    seed: int = 0,
    lr: float = 1e-3,
    warmup: int = 100,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    noise: float = 0.15,
    start_from: Path | None = None,
    log=print,
) -> tuple[TokenPrior, list[float]]:
    torch.manual_seed(seed)
    vqgan = load_toy_models().vqgan.float().eval()
    start = time.time()
    _, code_pool = encode_pool(vqgan, pool, seed)
    log(f"encoded {pool} images in {time.time() - start:.0f} s")
    _, h, w = code_pool.shape
    K = vqgan.codebook.shape[0]
    config = TransformerConfig(
        vocab_size=K + 1,
        block_size=h * w,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        n_unmasked=h * w,
    )
    model = TokenTransformer(config)
    model.apply(_init_weights)
    if start_from is not None:  # go on training an earlier run's weights
        model.load_state_dict(load_prior(start_from).transformer.state_dict())
    opt = adamw(model, lr)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    start = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * _schedule(step, steps, warmup)
        codes = code_pool[torch.randint(pool, (batch,), generator=g)].view(batch, -1)
        inputs, target = corrupt(codes, K, noise, g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(inputs)
        logits = logits.float()[..., :K]
        loss = F.cross_entropy(logits[target], codes[target])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            recent = sum(losses[-100:]) / len(losses[-100:])
            log(f"step {step} loss {recent:.3f} ({time.time() - start:.0f} s)")
    model.eval().requires_grad_(False)
    prior = TokenPrior(model, Condition("masked", mask_token=K), "toy masked prior")
    return prior, losses


@torch.no_grad()
def held_out(prior: TokenPrior, n: int = 512, seed: int = 99, ratio: float = 0.5) -> float:
    """Nats per masked token of n fresh grids with `ratio` of their tokens masked."""
    vqgan = load_toy_models().vqgan.float().eval()
    _, codes = encode_pool(vqgan, n, seed)
    codes = codes.view(n, -1)
    g = torch.Generator().manual_seed(seed)
    masked = torch.rand(codes.shape, generator=g) < ratio
    K = prior.condition.mask_token
    logits = prior.transformer(torch.where(masked, K, codes))[..., :K]
    return float(F.cross_entropy(logits[masked], codes[masked]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-from", type=Path, help="go on from these weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    prior, losses = train_masked_prior(
        steps=args.steps,
        n_layer=args.layers,
        n_embd=args.width,
        lr=args.lr,
        seed=args.seed,
        start_from=args.start_from,
    )
    save_prior(prior, args.out)
    nll = held_out(prior)
    report = {
        "steps": args.steps,
        "lr": args.lr,
        "seed": args.seed,
        "start_from": str(args.start_from) if args.start_from else None,
        "layers": args.layers,
        "width": args.width,
        "final_train_loss": sum(losses[-100:]) / 100,
        "held_out_nats_per_masked_token_at_half": round(nll, 4),
        "seconds": round(time.time() - start),
        "threads": args.threads,
    }
    print(json.dumps(report, indent=2))
    args.out.with_suffix(".report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
