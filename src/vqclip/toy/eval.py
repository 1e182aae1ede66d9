"""The toy benchmark: generate one image per prompt with the normal loop, let the judge score it.

Success is counted per attribute the prompt names and overall (every named attribute right, and
the judge sees one clean object). The guides' own verdict is reported beside it: where the
guides say yes and the judge says no, the image fools its own guide (the adversarial gap).
Several cutout methods run side by side at equal steps.

    python -m vqclip.toy.eval --methods crowson,whole --json eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vqclip.clip import CLIP
from vqclip.errors import ConfigError
from vqclip.generate import GenerateConfig, GenerationError, Generator
from vqclip.generate.rerank import best_of, guide_scores
from vqclip.toy.judge import Verdict
from vqclip.toy.models import ToyModels, load_toy_models
from vqclip.toy.world import ATTRIBUTES, REJECT_CAPTIONS, caption_text, parse_caption

# Cut methods compared, as GenerateConfig overrides.
METHODS: dict[str, dict] = {
    "crowson": {"cut_method": "crowson"},
    "crowson-noaug": {"cut_method": "crowson", "augments": (), "noise_fac": 0.0},
    "whole": {"cut_method": "whole"},
    "overview": {"cut_method": "overview"},
}


def default_prompts() -> tuple[str, ...]:
    """60 prompts drawn by a fixed seed: 40 name shape, colour and background; 20 also size and
    position."""
    g = torch.Generator().manual_seed(2024)
    out: list[str] = []
    while len(out) < 60:
        pick = {k: v[int(torch.randint(len(v), (), generator=g))] for k, v in ATTRIBUTES.items()}
        if pick["colour"] == pick["background"]:
            continue
        names = ("shape", "colour", "background")
        if len(out) >= 40:
            names += ("size", "position")
        text = caption_text({k: pick[k] for k in names})
        if text not in out:
            out.append(text)
    return tuple(out)


DEFAULT_PROMPTS = default_prompts()


@dataclass(frozen=True)
class EvalSettings:
    """Loop settings shared by every method."""

    iterations: int = 100
    cutn: int = 16
    lr: float = 0.1
    tv_weight: float = 0.0
    seed: int = 0
    init: str = "random"
    best_of: int = 1
    precision: str = "auto"  # the decoder's and guides' compute dtype (the fast-path guard)

    def config(self, prompts: Sequence[str], method: str, models: ToyModels) -> GenerateConfig:
        """The run for all prompts at once: `best_of` candidates of each, candidate-major."""
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        if self.best_of < 1:
            raise ConfigError(f"best_of must be at least 1, got {self.best_of}")
        return GenerateConfig(
            prompts=tuple(prompts) * self.best_of,
            batch_size=len(prompts) * self.best_of,
            size=(64, 64),
            iterations=self.iterations,
            seed=self.seed,
            vqgan=str(models.vqgan_path),
            clip=tuple(str(p) for p in models.clip_paths),
            cutn=self.cutn,
            lr=self.lr,
            tv_weight=self.tv_weight,
            init=self.init,
            device="cpu",
            precision=self.precision,
            **METHODS[method],
        )


@dataclass
class PromptResult:
    prompt: str
    wanted: dict[str, str]
    verdict: Verdict
    guide_yes: bool
    any_right: bool = False  # with best-of-N: some candidate, not only the kept one, was right
    correct: dict[str, bool] = field(init=False)

    def __post_init__(self) -> None:
        self.correct = self.verdict.correct(self.wanted)

    @property
    def read(self) -> dict[str, bool]:
        """Per named attribute: what the judge reads, its reject head ignored. Shows which
        attributes the text steers while the judge still refuses the picture as a whole."""
        return {k: self.verdict.attributes[k] == v for k, v in self.wanted.items()}

    @property
    def success(self) -> bool:
        return all(self.correct.values())


# helper functions


@torch.no_grad()
def guide_says_yes(
    clips: Sequence[CLIP], images: torch.Tensor, prompts: Sequence[str]
) -> list[bool]:
    """Whether the guides (similarities averaged) read each image as its prompt: every named
    attribute is the nearest of its values, and the prompt is nearer than any reject caption."""
    from vqclip.toy.train_clip import ZERO_SHOT_PROMPTS

    rejects = [t for opts in REJECT_CAPTIONS.values() for t in opts]
    answers = []
    for image, prompt in zip(images, prompts, strict=True):
        wanted = parse_caption(prompt)
        yes = True
        for name, value in wanted.items():
            texts = [ZERO_SHOT_PROMPTS[name](v) for v in ATTRIBUTES[name]]
            yes &= _nearest(clips, image, texts) == ATTRIBUTES[name].index(value)
        yes &= _nearest(clips, image, [prompt, *rejects]) == 0
        answers.append(bool(yes))
    return answers


def _nearest(clips: Sequence[CLIP], image: torch.Tensor, texts: list[str]) -> int:
    sims = 0
    for clip in clips:
        size = clip.input_size
        view = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)
        img = F.normalize(clip.encode_image(view), dim=-1)
        sims = sims + img @ F.normalize(clip.encode_text_str(texts), dim=-1).t()
    return int(sims.argmax())


def run_method(
    models: ToyModels,
    prompts: Sequence[str],
    method: str,
    settings: EvalSettings,
    *,
    progress: bool = True,
) -> tuple[list[PromptResult], torch.Tensor, float]:
    """Generate all prompts as one batch; (results, images (N, 3, 64, 64), seconds per prompt).

    With `settings.best_of` > 1 every prompt gets that many candidates and the guides keep one
    (`vqclip.generate.rerank`); the judge sees only the kept image, and `any_right` records
    whether any candidate would have passed."""
    config = settings.config(prompts, method, models)
    gen = Generator(config, vqgan=models.vqgan, clips=models.clips, device="cpu")
    start = time.perf_counter()
    try:
        for _ in tqdm(gen.iterate(), total=config.iterations, desc=method, disable=not progress):
            pass
        images = gen.image()
    except GenerationError as e:  # a NaN loss: judge the last good images, and say so
        print(f"{method}: {e.args[0][-120:]}", file=sys.stderr)
        images = gen.last_good_image()
    n, k = len(prompts), settings.best_of
    kept = best_of(guide_scores(models.clips, images, config.prompts), n, k) if k > 1 else None
    seconds = (time.perf_counter() - start) / n
    every = models.judge.verdicts(images)  # every candidate, candidate-major
    any_right = [
        any(all(every[c * n + i].correct(parse_caption(p)).values()) for c in range(k))
        for i, p in enumerate(prompts)
    ]
    if kept is not None:
        images = images[kept]
    verdicts = every if kept is None else [every[i] for i in kept.tolist()]
    guide = guide_says_yes(models.clips, images, prompts)
    results = [
        PromptResult(p, parse_caption(p), v, y, a)
        for p, v, y, a in zip(prompts, verdicts, guide, any_right, strict=True)
    ]
    return results, images, seconds


def summarise(results: Sequence[PromptResult]) -> dict[str, float]:
    """Success rate per attribute (over the prompts naming it), overall, guide yes, the
    adversarial gap (guide yes but judge no), and `read`: the share of named attributes the
    judge reads right with its reject head ignored."""
    out: dict[str, float] = {}
    for name in ATTRIBUTES:
        named = [r.correct[name] for r in results if name in r.correct]
        if named:
            out[name] = sum(named) / len(named)
    n = len(results)
    out["overall"] = sum(r.success for r in results) / n
    out["read"] = sum(sum(r.read.values()) for r in results) / sum(len(r.read) for r in results)
    out["guide_yes"] = sum(r.guide_yes for r in results) / n
    out["gap"] = sum(r.guide_yes and not r.success for r in results) / n
    out["clean"] = sum(r.verdict.clean for r in results) / n
    out["any_right"] = sum(r.any_right for r in results) / n
    return out


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per method, percentages."""
    cols = [*ATTRIBUTES, "clean", "overall", "any_right", "guide_yes", "gap", "read", "s/prompt"]
    width = max(len(m) for m in rows) + 2
    lines = ["method".ljust(width) + "".join(c.rjust(11) for c in cols)]
    for method, row in rows.items():
        cells = []
        for c in cols:
            v = row.get(c)
            if v is None:
                cells.append("-".rjust(11))
            elif c == "s/prompt":
                cells.append(f"{v:.2f}".rjust(11))
            else:
                cells.append(f"{100 * v:.0f}%".rjust(11))
        lines.append(method.ljust(width) + "".join(cells))
    return "\n".join(lines)


def _split_by_kind(prompts: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {"shape+colour+background": [], "all five": []}
    for i, p in enumerate(prompts):
        groups["all five" if len(parse_caption(p)) == 5 else "shape+colour+background"].append(i)
    return {k: v for k, v in groups.items() if v}


# main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqclip.toy.eval", description=__doc__)
    parser.add_argument("--prompts", type=Path, help="a text file, one prompt per line")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=EvalSettings.iterations)
    parser.add_argument("--cutn", type=int, default=EvalSettings.cutn)
    parser.add_argument("--lr", type=float, default=EvalSettings.lr)
    parser.add_argument("--tv-weight", type=float, default=EvalSettings.tv_weight)
    parser.add_argument("--seed", type=int, default=EvalSettings.seed)
    parser.add_argument(
        "--best-of",
        type=int,
        default=EvalSettings.best_of,
        help="candidates per prompt; the guides keep the best (the judge sees that one)",
    )
    parser.add_argument(
        "--every",
        type=int,
        default=1,
        help="only every Nth prompt (--every 5: the 12-prompt probe of docs/toy.md)",
    )
    parser.add_argument("--limit", type=int, help="only the first N prompts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default=EvalSettings.precision,
        help="compute dtype of the decoder and guides (auto: bf16 only where it is fast); "
        "compare bf16 with fp32 to check that the fast path paints the same",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--weights", type=Path, help="a folder of toy weights (default: the shipped ones)"
    )
    parser.add_argument(
        "--guides",
        help="comma-separated CLIP files (or registered names) to guide with instead of the "
        "toy guides; the VQGAN and the judge stay the toy ones",
    )
    parser.add_argument("--images", type=Path, help="save a PNG grid per method in this folder")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error(f"--every must be at least 1, got {args.every}")
    guides = [name for name in (args.guides or "").split(",") if name]
    if args.guides is not None and not guides:
        parser.error("--guides needs at least one CLIP file or name, e.g. --guides a.safetensors")
    torch.set_num_threads(args.threads)
    prompts = list(DEFAULT_PROMPTS)
    if args.prompts:
        prompts = [ln.strip() for ln in args.prompts.read_text().splitlines() if ln.strip()]
    prompts = prompts[:: args.every]
    prompts = prompts[: args.limit] if args.limit else prompts
    settings = EvalSettings(
        args.steps,
        args.cutn,
        args.lr,
        args.tv_weight,
        args.seed,
        best_of=args.best_of,
        precision=args.precision,
    )
    models = load_toy_models(args.weights) if args.weights else load_toy_models()
    if guides:
        from vqclip.weights.resolve import load_clip_by_name

        models.clip_paths = [Path(name) for name in guides]
        models.clips = [load_clip_by_name(name) for name in guides]
    rows: dict[str, dict[str, float]] = {}
    report: dict = {
        "settings": settings.__dict__,
        "guides": [str(path) for path in models.clip_paths],
        "prompts": prompts,
        "methods": {},
    }
    for method in args.methods.split(","):
        results, images, seconds = run_method(models, prompts, method, settings)
        for group, idx in _split_by_kind(prompts).items():
            rows[f"{method} [{group}]"] = {
                **summarise([results[i] for i in idx]),
                "s/prompt": seconds,
            }
        report["methods"][method] = {
            "summary": summarise(results),
            "seconds_per_prompt": seconds,
            "per_prompt": [
                {
                    "prompt": r.prompt,
                    "success": r.success,
                    "correct": r.correct,
                    "clean": r.verdict.clean,
                    "read": r.read,
                    "any_right": r.any_right,
                    "guide_yes": r.guide_yes,
                }
                for r in results
            ],
        }
        if args.images:
            _save_grid(images, args.images / f"{method}.png")
        print(format_table(rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def _save_grid(images: torch.Tensor, path: Path) -> None:
    from PIL import Image

    n = len(images)
    cols = 10
    rows = -(-n // cols)
    pad = torch.zeros(rows * cols - n, *images.shape[1:])
    grid = torch.cat([images, pad]).view(rows, cols, 3, 64, 64).permute(0, 3, 1, 4, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid.reshape(rows * 64, cols * 64, 3) * 255).byte().numpy()).save(path)


if __name__ == "__main__":
    sys.exit(main())
