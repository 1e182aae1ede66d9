"""Which of the masked prior's guided draws would be right, and does the guides' pick find them
(a measurement).

    python -m research.toy.pick_probe [--every 5] [--skip N] [--limit N] [--k 12] \\
        [--guidance 1] [--rounds 32] [--cutn 16] [--guide-view whole|cutouts] [--images PREFIX]

For each probe prompt draws K grids from the masked prior steered by the guides (as `--init
prior` does), judges every candidate, and scores each by two picks: the whole image as the
guides see it (`Run.whole_image_loss`, today's pick) and the loop's own loss (the mean over
`cutn` augmented cutouts, as a step sees the image). Prints, per prompt, how many candidates
the judge accepts and what each pick chose: whether the draws or the pick are what fails.
`--guide-view cutouts` steers the draws by the cutouts' loss instead of the whole image's.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vqclip.generate import Run
from vqclip.toy.eval import DEFAULT_PROMPTS, EvalSettings, grid_png, judge_images, toy_run
from vqclip.toy.models import WEIGHTS_DIR, load_toy_models


def cutout_loss(run: Run, images: torch.Tensor, index: int, g: torch.Generator) -> torch.Tensor:
    """(N,): image `index`'s prompt loss of N candidate pictures as the loop's step sees them
    (each picture's own augmented cutouts, CLIPs weighted)."""
    N, total = len(images), torch.zeros(len(images))
    for clip, cutouts, terms, weight in zip(
        run.clips, run.cutouts, run.prompts, run.config.weights_of_clips, strict=True
    ):
        cuts = cutouts(images, g)
        embeds = clip.encode_image(cuts).float().view(N, run.config.cutn, -1)
        for _label, prompt, own, _part in terms:
            if own is None or own == index:
                total = total + weight * prompt(embeds)[0]
    return total


def cutout_gradient(run: Run, grid: torch.Tensor, index: int, g: torch.Generator) -> torch.Tensor:
    """(N, C, h, w): the gradient of `cutout_loss` with respect to the latent of grids (N, h, w)
    at their codes: guidance as the loop's step would see the picture."""
    z = F.embedding(grid, run.vqgan.codebook.float()).permute(0, 3, 1, 2).requires_grad_(True)
    image = run.vqgan.decode(z).add(1).div(2).clamp(0, 1)
    (gradient,) = torch.autograd.grad(cutout_loss(run, image, index, g).sum(), z)
    return gradient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="toy_masked_prior")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--skip", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--cutn", type=int, default=16)
    parser.add_argument("--images", default="")
    parser.add_argument(
        "--guide-view", choices=("whole", "cutouts"), default="whole", help="what the guides see"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = load_toy_models(WEIGHTS_DIR)
    prompts = list(DEFAULT_PROMPTS[:: args.every])[args.skip :]
    if args.limit:
        prompts = prompts[: args.limit]
    config = EvalSettings(precision="fp32", cutn=args.cutn).config(
        prompts,
        "overview",
        vqgan=str(models.vqgan_path),
        clips=[str(p) for p in models.clip_paths],
        overrides=dict(
            prior=args.prior,
            prior_weight=0.0,
            prior_resample_every=10,  # builds the resampler; no step is taken here
            prior_guidance=args.guidance,
            prior_draw_steps=args.rounds,
            prior_draw_temperature=args.temperature,
        ),
    )
    run = toy_run(config, models)
    g = torch.Generator().manual_seed(1)
    totals = {"any": 0, "whole": 0, "cutouts": 0, "whole_read": 0, "cut_read": 0, "named": 0}
    for b, prompt in enumerate(prompts):
        start = time.perf_counter()
        if args.guide_view == "whole":
            guide = lambda grid, b=b: run.prompt_gradient(grid, b)  # noqa: E731
        else:
            guide = lambda grid, b=b: cutout_gradient(run, grid, b, g)  # noqa: E731
        grids = run.extensions[0].sampler.sample(args.k, run.rng, guide)
        with torch.no_grad():
            z = F.embedding(grids, run.vqgan.codebook.float()).permute(0, 3, 1, 2)
            images = run.vqgan.decode(z).add(1).div(2).clamp(0, 1)
            whole = run.whole_image_loss(images, b)
            cut = cutout_loss(run, images, b, g)
        results = judge_images(models, images, [prompt] * args.k)
        ok = [r.success for r in results]
        reads = [sum(r.read.values()) for r in results]
        iw, ic = int(whole.argmin()), int(cut.argmin())
        totals["any"] += any(ok)
        totals["whole"] += ok[iw]
        totals["cutouts"] += ok[ic]
        totals["whole_read"] += reads[iw]
        totals["cut_read"] += reads[ic]
        totals["named"] += len(results[0].read)
        print(
            f"{prompt[:58]:58} right {sum(ok):2}/{args.k} clean "
            f"{sum(r.verdict.clean for r in results):2} best read {max(reads)}/"
            f"{len(results[0].read)}; whole pick ok={ok[iw]} read {reads[iw]}; cutout pick "
            f"ok={ok[ic]} read {reads[ic]} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        if args.images:
            with open(f"{args.images}{b:02d}.png", "wb") as f:
                f.write(grid_png(images, cols=args.k))
    print(
        f"prompts with a right candidate {totals['any']}/{len(prompts)}; whole pick right "
        f"{totals['whole']}, read {totals['whole_read']}/{totals['named']}; cutout pick right "
        f"{totals['cutouts']}, read {totals['cut_read']}/{totals['named']}"
    )


if __name__ == "__main__":
    main()
