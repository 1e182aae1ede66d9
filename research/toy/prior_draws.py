"""What the toy prior draws, and what resampling and a prior start cost (a measurement).

    python -m research.toy.prior_draws [--temperature 1.0] [--n 64] [--grid FILE.png]

Draws `--n` token grids from the shipped toy prior (`vqclip.prior.resample.TokenResampler`,
seed 0), decodes them with the toy VQGAN and lets the judge count the clean ones; then times,
on the 12-prompt probe's batch (one thread), a loop step, one resampling of all 12 images and
the construction of a run with `--init prior --prior-candidates 16`. research/toy-log.md,
"Prior-guided token resampling and a prior start", has the figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vqclip.prior.resample import TokenResampler
from vqclip.prior.resolve import load_prior_by_name
from vqclip.toy.eval import DEFAULT_PROMPTS, EvalSettings, grid_png, toy_run
from vqclip.toy.models import WEIGHTS_DIR, load_toy_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--grid", type=Path, help="write the decoded draws here (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = load_toy_models(WEIGHTS_DIR)
    prior = load_prior_by_name("toy_prior")
    codebook = models.vqgan.codebook.float()
    sampler = TokenResampler(prior, codebook.shape[0], (16, 16), temperature=args.temperature)
    start = time.perf_counter()
    idx = sampler.sample(args.n, torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        images = models.vqgan.decode(F.embedding(idx, codebook).permute(0, 3, 1, 2))
        images = images.add(1).div(2).clamp(0, 1)
    clean = sum(v.clean for v in models.judge.verdicts(images))
    nll = TokenResampler(prior, codebook.shape[0], (16, 16)).surprisal(idx).mean()
    print(
        f"{args.n} draws at temperature {args.temperature}: {seconds:.1f} s, judged clean "
        f"{clean}, mean surprisal {nll:.2f} nats per token"
    )
    if args.grid:
        args.grid.write_bytes(grid_png(images, cols=8))

    prompts = list(DEFAULT_PROMPTS[::5])
    config = EvalSettings(precision="fp32").config(
        prompts,
        "overview",
        vqgan=str(models.vqgan_path),
        clips=[str(p) for p in models.clip_paths],
        overrides=dict(prior="toy_prior", prior_weight=0.0, prior_resample_every=10),
    )
    run = toy_run(config, models)
    start = time.perf_counter()
    run.step(), run.step()
    step = (time.perf_counter() - start) / 2
    start = time.perf_counter()
    run.extensions[0].resample(run)
    resample = time.perf_counter() - start
    start = time.perf_counter()
    prior_start = config.replace(
        init="prior", prior_candidates=16, prior_draw_temperature=0.6, prior_resample_every=0
    )
    toy_run(prior_start, models)
    init = time.perf_counter() - start
    print(
        f"12 probe images: a step {step:.2f} s, one resampling {resample:.2f} s, a run with "
        f"--init prior --prior-candidates 16 built in {init:.1f} s"
    )


if __name__ == "__main__":
    main()
