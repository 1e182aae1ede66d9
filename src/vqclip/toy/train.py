"""Train the whole toy world: judge, VQGAN, two CLIP guides; write them and their figures.

    python -m vqclip.toy.train            # into src/vqclip/toy/weights/, ~35 min on 2 CPU cores

Seeded and reproducible on one machine and thread count (bfloat16 autocast and thread
scheduling can change the last bits elsewhere). Each part is measured with the shipped files
loaded back through the public loaders, never with the in-memory models: judge accuracy on 1,000
fresh images, the judge's reading of 1,000 VQGAN reconstructions and their PSNR, and each
guide's zero-shot accuracy. Figures and wall times go to `training.json` beside the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from vqclip.atomic import atomic_write_text
from vqclip.clip import load_clip, save_clip
from vqclip.toy.judge import evaluate_judge, load_judge, save_judge, score_scenes, train_judge
from vqclip.toy.models import (
    CLIP_FILES,
    JUDGE_FILE,
    VQGAN_CKPT,
    VQGAN_SAFETENSORS,
    VQGAN_YAML,
    WEIGHTS_DIR,
)
from vqclip.toy.train_clip import train_clip, zero_shot
from vqclip.toy.train_vqgan import psnr, reconstruct, train_vqgan
from vqclip.toy.world import sample_images
from vqclip.vqgan import load_vqgan, save_taming, save_vqgan

PARTS = ("judge", "vqgan", "clip")
JUDGE_SEED = 1234  # the judge's own seed, unrelated to the guides'
CLIP_SEEDS = (1, 2)
EVAL_SEED = 99  # fresh images for every figure, never seen in training


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}


def _train_judge(out: Path, scale: float) -> dict:
    judge = train_judge(steps=round(1500 * scale), seed=JUDGE_SEED)
    save_judge(judge, out / JUDGE_FILE)
    return {"accuracy": _rounded(evaluate_judge(load_judge(out / JUDGE_FILE), seed=EVAL_SEED))}


def _train_vqgan(out: Path, scale: float) -> dict:
    model = train_vqgan(steps=round(2000 * scale), seed=0).half()
    save_taming(model, out / VQGAN_CKPT, out / VQGAN_YAML)
    save_vqgan(model, out / VQGAN_SAFETENSORS)
    images, scenes = sample_images(1000, torch.Generator().manual_seed(EVAL_SEED))
    judge = load_judge(out / JUDGE_FILE)
    figures = {}
    for label, path, config in (
        ("taming_ckpt", out / VQGAN_CKPT, out / VQGAN_YAML),
        ("safetensors", out / VQGAN_SAFETENSORS, None),
    ):
        rec = reconstruct(load_vqgan(path, config), images)
        figures[label] = {
            "psnr": round(psnr(rec, images), 2),
            **_rounded(score_scenes(judge, rec, scenes)),
        }
    return {"reconstructions": figures}


def _train_clips(out: Path, scale: float) -> dict:
    figures = {}
    for seed, name in zip(CLIP_SEEDS, CLIP_FILES, strict=True):
        start = time.perf_counter()
        save_clip(train_clip(steps=round(900 * scale), seed=seed).half(), out / name)
        figures[name] = {
            "zero_shot": _rounded(zero_shot(load_clip(out / name), seed=EVAL_SEED)),
            "wall_s": round(time.perf_counter() - start, 1),
        }
    return figures


_TRAINERS = {"judge": _train_judge, "vqgan": _train_vqgan, "clip": _train_clips}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqclip.toy.train", description=__doc__)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is fastest when anything else runs on a 2-core machine",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = args.out / "training.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record["threads"] = args.threads
    record["scale"] = args.scale
    for part in PARTS:
        if part not in parts:
            continue
        start = time.perf_counter()
        figures = _TRAINERS[part](args.out, args.scale)
        figures["wall_s"] = round(time.perf_counter() - start, 1)
        record[part] = figures
        print(f"{part}: {json.dumps(figures)}", flush=True)
        atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
