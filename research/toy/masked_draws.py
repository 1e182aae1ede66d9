"""What the masked toy prior draws on its own (a measurement).

    python -m research.toy.masked_draws [--prior toy_masked_prior] [--n 64] [--temperature 1]
        [--steps 8] [--grid FILE.png] [--class-guidance S]

Draws `--n` token grids from a masked prior (`vqclip.prior.masked.MaskedResampler`, seed 0, no
guidance), decodes them with the toy VQGAN and lets the judge read them: how many are one clean
object, and how the judge's readings of shape, colour and background spread (a prior that knows
objects draws every shape and colour of the world, not only backgrounds). Also prints the mean
surprisal of the draws and of fresh world grids under the prior. With a prior that names its
classes (toy_shape_prior) the draws go round the classes (draw i asks for class i mod n, at
`--class-guidance` S) and the share the judge reads as the asked shape is printed too.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from research.toy.train_prior import encode_pool
from vqclip.prior.masked import MaskedResampler
from vqclip.prior.resolve import load_prior_by_name
from vqclip.toy.eval import grid_png
from vqclip.toy.models import WEIGHTS_DIR, load_toy_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="toy_masked_prior")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--grid", type=Path, help="write the decoded draws here (PNG)")
    parser.add_argument("--class-guidance", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = load_toy_models(WEIGHTS_DIR)
    prior = load_prior_by_name(args.prior)
    codebook = models.vqgan.codebook.float()
    sampler = MaskedResampler(
        prior,
        codebook.shape[0],
        (16, 16),
        codebook,
        temperature=args.temperature,
        steps=args.steps,
        class_guidance=args.class_guidance,
    )
    names = prior.condition.class_names
    labels = [i % len(names) for i in range(args.n)] if names else None
    start = time.perf_counter()
    idx = sampler.sample(args.n, torch.Generator().manual_seed(0), labels=labels)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        images = models.vqgan.decode(F.embedding(idx, codebook).permute(0, 3, 1, 2))
        images = images.add(1).div(2).clamp(0, 1)
    verdicts = models.judge.verdicts(images)
    clean = sum(v.clean for v in verdicts)
    scorer = MaskedResampler(prior, codebook.shape[0], (16, 16), codebook)
    _, world = encode_pool(models.vqgan.float().eval(), args.n, 99)
    print(
        f"{args.n} draws at temperature {args.temperature}, {args.steps} rounds: "
        f"{seconds:.1f} s, judged clean {clean}; mean surprisal {scorer.surprisal(idx).mean():.2f} "
        f"nats per token (fresh world grids: {scorer.surprisal(world).mean():.2f})"
    )
    if labels:
        pairs = list(zip(verdicts, labels, strict=True))
        asked = sum(v.attributes["shape"] == names[c] for v, c in pairs)
        both = sum(v.clean and v.attributes["shape"] == names[c] for v, c in pairs)
        print(f"  read as the asked shape: {asked} of {args.n}; clean and the asked shape: {both}")
    for name in ("shape", "colour", "background"):
        counts = Counter(v.attributes[name] for v in verdicts)
        print(f"  judge's {name}: {dict(counts.most_common())}")
    if args.grid:
        args.grid.write_bytes(grid_png(images, cols=8))


if __name__ == "__main__":
    main()
