"""The toy eval with best-of-N: N candidates a prompt, the guides keep one, the judge sees it.

    python -m research.toy.eval_best_of --best-of 4 --every 5 --methods overview

Candidates are ranked by `research.toy.rerank.guide_scores` (the guides on the whole image).
`any_right` is the share of prompts where some candidate, not only the kept one, was judged
right: what a perfect reranker would reach. Not measured in the eval yet (research/toy-log.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from research.toy.rerank import best_of, guide_scores
from vqclip.atomic import atomic_write_text
from vqclip.errors import ConfigError, VQClipError
from vqclip.toy.eval import (
    DEFAULT_PROMPTS,
    METHODS,
    EvalSettings,
    MethodResult,
    format_table,
    generate_images,
    judge_images,
    named_attributes,
    table_rows,
)
from vqclip.toy.models import ToyModels, load_toy_models


def run_best_of(
    models: ToyModels,
    prompts: Sequence[str],
    method: str,
    settings: EvalSettings,
    candidates: int,
    *,
    progress: bool = True,
) -> tuple[MethodResult, list[bool]]:
    """All prompts `candidates` times in one batch (candidate-major); the judge sees the kept
    candidate of each prompt. Returns its result and, per prompt, whether any candidate was
    judged right."""
    if candidates < 1:
        raise ConfigError(f"candidates must be at least 1, got {candidates}")
    n = len(prompts)
    batch = list(prompts) * candidates
    images, seconds, error = generate_images(models, batch, method, settings, progress=progress)
    every = models.judge.verdicts(images)  # image c * n + i is candidate c of prompt i
    any_right = [
        any(all(every[c * n + i].correct(named_attributes(p)).values()) for c in range(candidates))
        for i, p in enumerate(prompts)
    ]
    kept = images[best_of(guide_scores(models.clips, images, batch), n, candidates)]
    result = MethodResult(
        method, judge_images(models, kept, prompts), kept, seconds * candidates, error
    )
    return result, any_right


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.toy.eval_best_of")
    parser.add_argument("--best-of", type=int, default=4, help="candidates per prompt")
    parser.add_argument("--methods", default="overview", help=f"from {', '.join(METHODS)}")
    parser.add_argument("--steps", type=int, default=EvalSettings.iterations)
    parser.add_argument("--cutn", type=int, default=EvalSettings.cutn)
    parser.add_argument("--seed", type=int, default=EvalSettings.seed)
    parser.add_argument("--every", type=int, default=1, help="only every Nth default prompt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the settings and results here")
    args = parser.parse_args(argv)
    if args.every < 1 or args.threads < 1:
        parser.error("--every and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    prompts = list(DEFAULT_PROMPTS[:: args.every])
    try:
        settings = EvalSettings(iterations=args.steps, cutn=args.cutn, seed=args.seed)
        models = load_toy_models()
        report: dict = {"settings": asdict(settings), "best_of": args.best_of, "methods": {}}
        rows: dict[str, dict[str, float]] = {}
        for method in args.methods.split(","):
            result, any_right = run_best_of(models, prompts, method, settings, args.best_of)
            share = sum(any_right) / len(prompts)
            rows.update(table_rows(result, prompts))
            report["methods"][method] = {**result.report(), "any_right": share}
            print(format_table(rows), flush=True)
            print(f"{method}: some candidate judged right for {100 * share:.0f}% of the prompts")
    except VQClipError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
