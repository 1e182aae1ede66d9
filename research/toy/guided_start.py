"""How good is a start drawn from the masked prior, steered by the guides (a measurement).

    python -m research.toy.guided_start --prior toy_masked_prior [--every 5] [--limit N] \\
        G,K,S,T [G,K,S,T ...]

For each spec (guidance G, candidates K, draw rounds S, draw temperature T) builds the probe's
run with `--init prior` and judges its start, before any loop step, as `vqclip eval` judges the
loop's images: what the prior and the guides' steering do alone, and what the loop then keeps.
"""

from __future__ import annotations

import argparse
import time

import torch

from vqclip.toy.eval import (
    DEFAULT_PROMPTS,
    EvalSettings,
    grid_png,
    judge_images,
    summarise,
    toy_run,
)
from vqclip.toy.models import WEIGHTS_DIR, load_toy_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="toy_masked_prior")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--images", default="", help="write each spec's grid to PREFIX<spec>.png")
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = load_toy_models(WEIGHTS_DIR)
    prompts = list(DEFAULT_PROMPTS[:: args.every])
    if args.limit:
        prompts = prompts[: args.limit]
    for spec in args.specs:
        g, k, s, t = spec.split(",")
        overrides = dict(
            prior=args.prior,
            prior_weight=0.0,
            init="prior",
            prior_guidance=float(g),
            prior_candidates=int(k),
            prior_draw_steps=int(s),
            prior_draw_temperature=float(t),
        )
        config = EvalSettings(precision="fp32").config(
            prompts,
            "overview",
            vqgan=str(models.vqgan_path),
            clips=[str(p) for p in models.clip_paths],
            overrides=overrides,
        )
        start = time.perf_counter()
        run = toy_run(config, models)
        seconds = time.perf_counter() - start
        images = run.image().float()
        results = judge_images(models, images, prompts)
        summary = summarise(results)
        n_read = sum(sum(r.read.values()) for r in results)
        n_named = sum(len(r.read) for r in results)
        print(
            f"G={g} K={k} S={s} T={t}: overall {summary['overall'] * len(prompts):.0f}/"
            f"{len(prompts)} clean {sum(r.verdict.clean for r in results)} guide yes "
            f"{sum(r.guide_yes for r in results)} read {n_read}/{n_named}; "
            f"{seconds / len(prompts):.1f} s per prompt",
            flush=True,
        )
        if args.images:
            with open(f"{args.images}{spec.replace(',', '_')}.png", "wb") as f:
                f.write(grid_png(images, cols=6))


if __name__ == "__main__":
    main()
