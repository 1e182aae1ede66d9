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
import functools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

from research.toy.train_prior import _init_weights, _schedule, adamw, encode_pool
from vqclip.prior.io import Condition, TokenPrior, load_prior, save_prior
from vqclip.prior.transformer import TokenTransformer, TransformerConfig
from vqclip.toy.models import load_toy_models
from vqclip.toy.world import SHAPES


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


def blobby(images: torch.Tensor, g: torch.Generator, warp: float = 8.0) -> torch.Tensor:
    """World images (N, 3, H, W) in [0, 1] made like the loop's objects: a smooth random warp of
    up to `warp` pixels (a 4x4 field of offsets, upsampled) and a blur of sigma 0.5-2.5 px."""
    N, _, H, W = images.shape
    strength = torch.rand(N, 1, 1, 1, generator=g) * warp * 2 / W
    field = (torch.rand(N, 2, 4, 4, generator=g) * 2 - 1) * strength
    field = F.interpolate(field, size=(H, W), mode="bicubic", align_corners=True)
    eye = torch.eye(2, 3).expand(N, 2, 3)
    grid = F.affine_grid(eye, [N, 3, H, W], align_corners=False) + field.permute(0, 2, 3, 1)
    out = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    sigma = 0.5 + 2 * float(torch.rand(1, generator=g))
    return gaussian_blur2d(out, (7, 7), (sigma, sigma), border_type="replicate").clamp(0, 1)


def object_weights(codes: torch.Tensor, weight: float) -> torch.Tensor:
    """(B, n) loss weights: `weight` at the object's tokens, 1 at the background's (the grid's
    commonest code; a world image is one object on a plain background)."""
    background = codes == codes.mode(1).values[:, None]
    return torch.where(background, 1.0, float(weight))


def shape_sampling(shapes: torch.Tensor, weights: Sequence[float] | None) -> torch.Tensor | None:
    """Per-image sampling weights (N,) from per-shape weights (one per `SHAPES`, in that
    order), or None for uniform picks: a pool drawn with more of a hard shape's grids."""
    if weights is None:
        return None
    if len(weights) != len(SHAPES) or min(weights) < 0 or max(weights) <= 0:
        raise ValueError(f"shape weights {list(weights)}: one per {SHAPES}, none negative")
    return torch.tensor(weights, dtype=torch.float)[shapes]


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
    classes: bool = False,
    class_dropout: float = 0.1,
    blobs: float = 0.0,
    object_weight: float = 1.0,
    shape_weights: Sequence[float] | None = None,
    log=print,
) -> tuple[TokenPrior, list[float]]:
    torch.manual_seed(seed)
    vqgan = load_toy_models().vqgan.float().eval()
    start = time.time()
    degrade = blobby if blobs else None
    _, code_pool, shape_pool, *rest = encode_pool(
        vqgan, pool, seed, with_shapes=True, degrade=degrade
    )
    blob_pool = rest[0] if rest else None
    sampling = shape_sampling(shape_pool, shape_weights)
    log(f"encoded {pool} images in {time.time() - start:.0f} s")
    _, h, w = code_pool.shape
    K = vqgan.codebook.shape[0]
    n_classes = len(SHAPES) if classes else 0
    P = 1 if classes else 0  # the class token before the grid
    config = TransformerConfig(
        vocab_size=K + 1 + n_classes,
        block_size=P + h * w,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        n_unmasked=P + h * w,
    )
    model = TokenTransformer(config)
    model.apply(_init_weights)
    if start_from is not None:  # go on training an earlier run's weights
        model.load_state_dict(widen(load_prior(start_from).transformer, config).state_dict())
    condition = Condition(
        "masked", mask_token=K, n_classes=n_classes, class_names=SHAPES if classes else ()
    )
    opt = adamw(model, lr)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    start = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * _schedule(step, steps, warmup)
        if sampling is None:
            pick = torch.randint(pool, (batch,), generator=g)
        else:
            pick = torch.multinomial(sampling, batch, replacement=True, generator=g)
        codes = code_pool[pick].view(batch, -1)
        inputs, target = corrupt(codes, K, noise, g)
        if blob_pool is not None:  # a share `blobs` of the grids shows the blobbed image's
            # codes where not masked, and is asked for the clean ones wherever they differ
            shown = blob_pool[pick].view(batch, -1)
            use = (torch.rand(batch, 1, generator=g) < blobs) & (inputs != K)
            target = target | (use & (shown != codes))
            inputs = torch.where(use, shown, inputs)
        if classes:  # the shape's token, or (a share `class_dropout`) the unknown class's
            label = shape_pool[pick].clone()
            unknown = torch.rand(batch, generator=g) < class_dropout
            prefix = TokenPrior(model, condition, "").prefix(batch, (h, w), None)
            prefix = torch.where(unknown[:, None], prefix, K + 1 + label[:, None])
            inputs = torch.cat([prefix, inputs], 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(inputs)
        logits = logits.float()[:, P:, :K]
        if object_weight == 1.0:
            loss = F.cross_entropy(logits[target], codes[target])
        else:
            weight = object_weights(codes, object_weight)
            ce = F.cross_entropy(logits[target], codes[target], reduction="none")
            loss = (ce * weight[target]).sum() / weight[target].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            recent = sum(losses[-100:]) / len(losses[-100:])
            log(f"step {step} loss {recent:.3f} ({time.time() - start:.0f} s)")
    model.eval().requires_grad_(False)
    prior = TokenPrior(model, condition, "toy masked prior")
    return prior, losses


def widen(old: TokenTransformer, config: TransformerConfig) -> TokenTransformer:
    """`old`'s weights in a model of `config`, which may have more tokens (class tokens after
    the old ones, their embeddings and output rows fresh) and positions (a prefix before the old
    ones: the old positions' embeddings move along, the new ones start at zero)."""
    new = TokenTransformer(config)
    new.apply(_init_weights)
    sd = old.state_dict()
    extra = config.block_size - old.config.block_size
    out = {}
    for key, value in new.state_dict().items():
        was = sd[key]
        if key in ("tok_emb.weight", "head.weight"):
            value = value.clone()
            value[: was.shape[0]] = was
        elif key == "pos_emb":
            value = torch.cat([torch.zeros_like(was[:, :extra]), was], 1)
        elif key.endswith("attn.mask"):
            value = value  # every position sees every other, at any size
        else:
            value = was
        out[key] = value
    new.load_state_dict(out)
    return new


@functools.cache
@torch.no_grad()
def _held_out_grids(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The toy VQGAN's codes (n, tokens) and shapes (n,) of n fresh world images, encoded once
    for every held-out figure of a run."""
    vqgan = load_toy_models().vqgan.float().eval()
    _, codes, shapes = encode_pool(vqgan, n, seed, with_shapes=True)
    return codes.view(n, -1), shapes


@torch.no_grad()
def held_out(
    prior: TokenPrior,
    n: int = 512,
    seed: int = 99,
    ratio: float = 0.5,
    unconditional=False,
    by_shape: bool = False,
) -> float | dict[str, float]:
    """Nats per masked token of n fresh grids with `ratio` of their tokens masked (with
    `by_shape`, one figure per shape of the world)."""
    codes, shapes = _held_out_grids(n, seed)
    g = torch.Generator().manual_seed(seed)
    masked = torch.rand(codes.shape, generator=g) < ratio
    K = prior.condition.mask_token
    inputs = torch.where(masked, K, codes)
    P = 1 if prior.condition.n_classes else 0
    if P and not unconditional:
        inputs = torch.cat([K + 1 + shapes[:, None], inputs], 1)
    elif P:
        inputs = torch.cat([prior.prefix(n, (16, 16), None), inputs], 1)
    logits = prior.transformer(inputs)[:, P:, :K]
    ce = F.cross_entropy(logits.transpose(1, 2), codes, reduction="none")  # (n, tokens)
    if not by_shape:
        return float(ce[masked].mean())
    return {
        name: round(float(ce[masked & (shapes[:, None] == i)].mean()), 4)
        for i, name in enumerate(SHAPES)
    }


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
    parser.add_argument(
        "--blobs",
        type=float,
        default=0.0,
        help="share of grids whose visible tokens are a warped, blurred copy's, to be named "
        "back as the clean image's (a prior that re-outlines blobs)",
    )
    parser.add_argument(
        "--classes",
        action="store_true",
        help="condition on the object's shape: a class token before the grid (10%% of the "
        "time the unknown class's, so the prior also draws without one)",
    )
    parser.add_argument(
        "--object-weight",
        type=float,
        default=1.0,
        help="weight of the object's tokens in the loss (those that are not the grid's "
        "commonest code, its background), against 1 for the background's",
    )
    parser.add_argument(
        "--shape-weights",
        type=lambda text: [float(x) for x in text.split(",")],
        help="how often each shape's grids are drawn, one weight per shape in the order "
        f"{','.join(SHAPES)} (e.g. 1,1,1,3: stars three times as often)",
    )
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
        classes=args.classes,
        blobs=args.blobs,
        object_weight=args.object_weight,
        shape_weights=args.shape_weights,
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
        "classes": list(prior.condition.class_names),
        "blobs": args.blobs,
        "object_weight": args.object_weight,
        "shape_weights": args.shape_weights,
        "held_out_without_class": round(held_out(prior, unconditional=True), 4),
        "held_out_by_shape": held_out(prior, by_shape=True),
        "seconds": round(time.time() - start),
        "threads": args.threads,
    }
    print(json.dumps(report, indent=2))
    args.out.with_suffix(".report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
