"""What each late clean-up does to the picture (a measurement).

    python -m research.toy.cleanup_steps [--every 5] [--skip N] [--limit N] --out grid.png

Runs the toy pair's default loop (the masked prior's clean-up every 25 steps) on probe prompts
and keeps the image just before and just after every resampling; writes them as one grid (a row
per prompt: before/after pairs in time order) and prints what the judge reads of each, so one
can see which redraw changes the background or the object.
"""

from __future__ import annotations

import argparse

import torch

from vqclip.toy.eval import DEFAULT_PROMPTS, EvalSettings, grid_png, judge_images, toy_run
from vqclip.toy.models import WEIGHTS_DIR, load_toy_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--skip", type=int, default=0)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = load_toy_models(WEIGHTS_DIR)
    prompts = list(DEFAULT_PROMPTS[:: args.every])[args.skip : args.skip + args.limit]
    config = EvalSettings(precision="fp32").config(
        prompts,
        "overview",
        vqgan=str(models.vqgan_path),
        clips=[str(p) for p in models.clip_paths],
    )
    run = toy_run(config, models)
    every, shots = config.prior_resample_every, []
    for step in run.iterate():
        if step.index % every == every - 1:  # the next step ends with a resampling
            shots.append(("before", step.index + 1, run.image().float()))
        if step.index % every == 0:
            shots.append(("after", step.index, run.image().float()))
    for kind, index, images in shots:
        results = judge_images(models, images, prompts)
        marks = ["".join(k[0] if ok else "." for k, ok in r.read.items()) for r in results]
        clean = ["*" if r.verdict.clean else " " for r in results]
        reads = " | ".join(m + c for m, c in zip(marks, clean, strict=True))
        print(f"{kind:6} step {index:3}: {reads}")
    grid = torch.stack([images for _, _, images in shots], dim=1).flatten(0, 1)
    with open(args.out, "wb") as f:
        f.write(grid_png(grid, cols=len(shots)))


if __name__ == "__main__":
    main()
