"""Train the whole toy world: judge, VQGAN, two CLIP guides; write them and their figures.

Run from the root of a source checkout (research/README.md):

    python -m research.toy.train            # into src/vqclip/toy/weights/ (~42 min, 2 cores)
    python -m research.toy.train --parts clip_a --out /tmp/w   # one part; parts run alone too
    python -m research.toy.train --jobs 1   # one part at a time, in this process

With --jobs N (default: 2 where there are 2 or more cores) independent parts run side by
side, each in its own process with --threads threads (default: the cores shared among the
parts that run at once), so the files are the same as with --jobs 1 and the same --threads.

Seeded and reproducible on one machine and thread count (bfloat16 autocast and thread
scheduling can change the last bits elsewhere). Each part is measured with the written files
loaded back through the public loaders, never with the in-memory models: judge accuracy on 1,000
fresh images, the judge's reading of 1,000 VQGAN reconstructions and their PSNR, and each
guide's zero-shot accuracy. Figures and wall times go to `training_<part>.json` in --figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from research.toy.train_clip import train_clip, zero_shot
from research.toy.train_judge import evaluate_judge, train_judge
from research.toy.train_prior import held_out_nll, train_prior
from research.toy.train_vqgan import psnr, reconstruct, sharpen_decoder, train_vqgan
from vqclip.atomic import atomic_write_text
from vqclip.clip import load_clip, save_clip
from vqclip.errors import VQClipError
from vqclip.prior.io import load_prior, save_prior
from vqclip.toy.judge import load_judge, save_judge, score_scenes
from vqclip.toy.models import (
    CLIP_FILES,
    JUDGE_FILE,
    VQGAN_CKPT,
    VQGAN_SAFETENSORS,
    VQGAN_YAML,
    WEIGHTS_DIR,
)
from vqclip.toy.world import sample_images
from vqclip.vqgan import load_vqgan, save_taming, save_vqgan

ROOT = Path(__file__).resolve().parents[2]  # the checkout: `-m research.toy.train` runs here
FIGURES_DIR = Path(__file__).resolve().parent / "figures"  # of the shipped weights

PARTS = ("judge", "vqgan", "sharpen", "prior", "clip_a", "clip_b", "robust", "report")
# What the shipped weights are; `robust` did not raise the eval (research/toy-log.md), so it
# runs only when asked for (`--parts robust,report`).
DEFAULT_PARTS = ("judge", "vqgan", "sharpen", "prior", "clip_a", "clip_b", "report")
JUDGE_SEED = 1234  # the judge's own seed, unrelated to the guides'
VQGAN_SEED = 0
CLIP_SEEDS = {"clip_a": 1, "clip_b": 2}
EVAL_SEED = 99  # fresh images for every figure, never seen in training
STEPS = {
    "judge": 1200,
    "vqgan": 1600,
    "sharpen": 300,
    "prior": 800,
    "clip_a": 1500,
    "clip_b": 1500,
}
# The token prior (`train_prior`): taming's GPT on the VQGAN's codes of world images, for
# `--prior toy_prior`; it reads the VQGAN in `out`, so it waits for it.
PRIOR_SEED = 0
PRIOR_FILE = "toy_prior.safetensors"
SHARPEN_SEED = 5  # the decoder's GAN fine-tune (`train_vqgan.sharpen_decoder`)
# Its pixel losses weighted toward the targets' outlines (`train_vqgan.edge_weights`).
SHARPEN_EDGE_WEIGHT = 8.0
# Guide training: a pre-rendered pool (rendering costs as much as a step), batches of sibling
# runs (same colour, background and size; different shape and position) and auxiliary
# attribute heads, so that shape and position are learned, not just colour.
# Half the reject images are hard negatives in a scene's own colours (patterns, several shapes).
CLIP_TRAINING = {"pool": 16384, "group": 4, "aux": 1.0, "lr": 2e-3, "hard": 0.5}
# Adversarial (PGD) training of both guides, continued from the files in the output folder:
# views moved within an L2 ball of radius adv_eps (pixel units) to raise the loss
# (`train_clip.adversarial_views`). The loop then paints one blob instead of a cluster of
# fragments, but the eval did not move and shape zero-shot fell (research/toy-log.md): opt-in.
ROBUST_TRAINING = {
    "steps": 400,
    "pool": 4096,
    "group": 4,
    "aux": 1.0,
    "lr": 5e-4,
    "hard": 0.5,
    "warmup": 30,
    "adv_eps": 1.0,
    "adv_steps": 3,
}
ROBUST_SEED = 100
# What each part reads that another part writes; a part waits only for the requested ones.
NEEDS = {
    "sharpen": ("vqgan",),
    "prior": ("vqgan", "sharpen"),
    "robust": ("clip_a", "clip_b"),
    "report": ("judge", "vqgan", "sharpen", "prior", "clip_a", "clip_b", "robust"),
}
# Start order among the parts that are ready: the longest chain (vqgan, then sharpen) first.
PRIORITY = ("vqgan", "sharpen", "prior", "clip_a", "clip_b", "judge", "robust", "report")


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}


def train_part(part: str, out: Path, scale: float = 1.0) -> None:
    """Train one part and write its files into `out`."""
    steps = max(1, round(STEPS[part] * scale))
    if part == "judge":
        save_judge(train_judge(steps=steps, seed=JUDGE_SEED), out / JUDGE_FILE)
    elif part == "vqgan":
        # fp16 storage halves the files; loading casts back to the model's float32.
        model = train_vqgan(steps=steps, seed=VQGAN_SEED).half()
        save_taming(model, out / VQGAN_CKPT, out / VQGAN_YAML)
        save_vqgan(model, out / VQGAN_SAFETENSORS)
    elif part == "sharpen":
        # Continues the VQGAN in `out`: its decoder against a patch discriminator.
        vqgan = load_vqgan(out / VQGAN_SAFETENSORS)
        model = sharpen_decoder(
            vqgan, steps=steps, seed=SHARPEN_SEED, edge_weight=SHARPEN_EDGE_WEIGHT
        ).half()
        save_taming(model, out / VQGAN_CKPT, out / VQGAN_YAML)
        save_vqgan(model, out / VQGAN_SAFETENSORS)
    elif part == "prior":
        prior = train_prior(load_vqgan(out / VQGAN_SAFETENSORS), steps=steps, seed=PRIOR_SEED)
        save_prior(prior, out / PRIOR_FILE)
    else:
        name = CLIP_FILES[0] if part == "clip_a" else CLIP_FILES[1]
        model = train_clip(steps=steps, seed=CLIP_SEEDS[part], **CLIP_TRAINING)
        save_clip(model.half(), out / name)


def robust(out: Path, scale: float = 1.0) -> dict:
    """Adversarial training of both guides in `out`, saved over them (ROBUST_TRAINING)."""
    training = dict(ROBUST_TRAINING, steps=max(1, round(ROBUST_TRAINING["steps"] * scale)))
    for part, name in zip(("clip_a", "clip_b"), CLIP_FILES, strict=True):
        model = train_clip(
            seed=CLIP_SEEDS[part] + ROBUST_SEED, init=load_clip(out / name), **training
        )
        save_clip(model.half(), out / name)
    return {"steps": training["steps"], "adv_eps": training["adv_eps"]}


def report(out: Path) -> dict:
    """Figures of the files in `out`, each loaded through the public loaders."""
    judge = load_judge(out / JUDGE_FILE)
    figures: dict = {"judge": _rounded(evaluate_judge(judge, seed=EVAL_SEED))}
    images, scenes = sample_images(1000, torch.Generator().manual_seed(EVAL_SEED))
    for label, path, config in (
        ("vqgan_taming_ckpt", out / VQGAN_CKPT, out / VQGAN_YAML),
        ("vqgan_safetensors", out / VQGAN_SAFETENSORS, None),
    ):
        rec = reconstruct(load_vqgan(path, config), images)
        figures[label] = {"psnr": round(psnr(rec, images), 2)}
        figures[label].update(_rounded(score_scenes(judge, rec, scenes)))
    for name in CLIP_FILES:
        figures[name] = _rounded(zero_shot(load_clip(out / name), seed=EVAL_SEED))
    return figures


def dependencies(parts: Sequence[str]) -> dict[str, set[str]]:
    """For each requested part, the requested parts it must wait for."""
    return {p: {d for d in NEEDS.get(p, ()) if d in parts} for p in parts}


class PartFailed(VQClipError):
    """A training part run as a subprocess exited with an error."""


def _progress_of(log: Path) -> str:
    """The last percentage a part's progress bar wrote to its log, or "" if none yet."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 400))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    found = re.findall(r"(\d+)%\|", tail)
    return f"{found[-1]}%" if found else ""


def run_parallel(
    parts: Sequence[str],
    command,
    *,
    jobs: int,
    log_dir: Path,
    poll_s: float = 1.0,
    progress: bool = True,
) -> list[str]:
    """Run each part as `command(part)` (an argv list, run in the checkout) in its own process,
    at most `jobs` at once, each only after the parts it needs (`dependencies`). Each process's
    output goes to `log_dir/<part>.log`. Returns the parts in the order they finished; on a
    failure the running processes are stopped and PartFailed names the part and shows its
    log's end."""
    waiting = dependencies(parts)
    todo = sorted(parts, key=PRIORITY.index)
    running: dict[str, tuple[subprocess.Popen, Path]] = {}
    finished: list[str] = []
    bar = tqdm(total=len(parts), desc="toy train", disable=not progress)
    try:
        while todo or running:
            for part in list(todo):
                if len(running) < jobs and not (waiting[part] - set(finished)):
                    log = log_dir / f"{part}.log"
                    with open(log, "wb") as f:
                        proc = subprocess.Popen(
                            command(part), stdout=f, stderr=subprocess.STDOUT, cwd=ROOT
                        )
                    running[part] = (proc, log)
                    todo.remove(part)
            for part, (proc, log) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[part]
                if code != 0:
                    tail = log.read_text(errors="replace")[-2000:].replace("\r", "\n")
                    raise PartFailed(
                        f"toy training part {part!r} failed (exit code {code}); the end of its "
                        f"log {log}:\n{tail}"
                    )
                finished.append(part)
                bar.update(1)
            bar.set_postfix_str(
                ", ".join(f"{p} {_progress_of(log)}".strip() for p, (_, log) in running.items()),
                refresh=True,
            )
            if running:
                time.sleep(poll_s)
    finally:
        for proc, _ in running.values():
            proc.kill()
            proc.wait()
        bar.close()
    return finished


def _default_jobs() -> int:
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def default_threads(jobs: int, n_parts: int, cores: int | None = None) -> int:
    """Threads of each part: the cores shared among the parts that can run at once (one part
    alone gets them all, whatever --jobs says)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, min(jobs, n_parts)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m research.toy.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=WEIGHTS_DIR, help=f"the weights folder (default: {WEIGHTS_DIR})"
    )
    parser.add_argument(
        "--figures",
        type=Path,
        help=f"where training_<part>.json go (default: {FIGURES_DIR} when --out is the shipped "
        "weights folder, else --out)",
    )
    parser.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated, from {', '.join(PARTS)} (default: {','.join(DEFAULT_PARTS)})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of each part (default: the cores divided among the parts that run "
        "at once); the last bits of the files depend on it",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    parser.add_argument(
        "--jobs",
        type=int,
        default=_default_jobs(),
        help="parts run side by side, each in its own process with --threads threads (the "
        "files are the same as with --jobs 1); progress lines of each part go to a log",
    )
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads is None:
        args.threads = default_threads(args.jobs, len(parts))
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.figures is None:
        shipped = args.out.resolve() == WEIGHTS_DIR.resolve()
        args.figures = FIGURES_DIR if shipped else args.out
    args.figures.mkdir(parents=True, exist_ok=True)
    if args.jobs > 1 and len(parts) > 1:

        def command(part: str) -> list[str]:
            return [
                sys.executable,
                "-m",
                "research.toy.train",
                *("--out", str(args.out.resolve()), "--parts", part, "--jobs", "1"),
                *("--figures", str(args.figures.resolve())),
                *("--threads", str(args.threads), "--scale", str(args.scale)),
            ]

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="vqclip-toy-train-") as logs:
            try:
                run_parallel(parts, command, jobs=args.jobs, log_dir=Path(logs))
            except PartFailed as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
        total = {"parts": parts, "jobs": args.jobs, "threads": args.threads}
        total["wall_s"] = round(time.perf_counter() - start, 1)
        print(f"all: {json.dumps(total)}", flush=True)
        atomic_write_text(args.figures / "training_all.json", json.dumps(total, indent=2) + "\n")
        return 0
    torch.set_num_threads(args.threads)
    for part in PARTS:
        if part not in parts:
            continue
        start = time.perf_counter()
        if part == "report":
            record = report(args.out)
        elif part == "robust":
            record = robust(args.out, args.scale)
        else:
            train_part(part, args.out, args.scale)
            record = {"steps": max(1, round(STEPS[part] * args.scale))}
            if part == "prior":  # nats per token of fresh images' codes, the file loaded back
                vqgan = load_vqgan(args.out / VQGAN_SAFETENSORS)
                record["held_out_nll"] = held_out_nll(load_prior(args.out / PRIOR_FILE), vqgan)
        record.update(wall_s=round(time.perf_counter() - start, 1), threads=args.threads)
        print(f"{part}: {json.dumps(record)}", flush=True)
        atomic_write_text(
            args.figures / f"training_{part}.json", json.dumps(record, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
