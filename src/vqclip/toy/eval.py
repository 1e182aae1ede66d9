"""The toy benchmark: generate one image per prompt with the normal loop, let the judge score it.

Success is counted per attribute the prompt names and overall (every named attribute right, and
the judge sees one clean object). The guides' own verdict is reported beside it: where the
guides say yes and the judge says no, the image fools its own guide (the adversarial gap).
Several cutout methods run side by side at equal steps. The command is `vqclip eval`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vqclip.clip import CLIP
from vqclip.errors import ConfigError
from vqclip.generate import GenerateConfig, GenerationError, Run
from vqclip.prior.plugin import extensions_for
from vqclip.toy.judge import Verdict
from vqclip.toy.models import ToyModels
from vqclip.toy.world import (
    ATTRIBUTES,
    IMAGE_SIZE,
    POSITION_PHRASES,
    REJECT_CAPTIONS,
    caption_text,
    parse_caption,
)
from vqclip.weights.registry import PAIRS

# Cut methods compared, as GenerateConfig overrides.
METHODS: dict[str, dict] = {
    "crowson": {"cut_method": "crowson"},
    "crowson-noaug": {"cut_method": "crowson", "augments": (), "noise_fac": 0.0},
    "whole": {"cut_method": "whole"},
    "overview": {"cut_method": "overview"},
}
PRECISIONS = ("auto", "fp32", "bf16")
# How a guide is asked about one attribute: the text of each value, one value per caption.
ZERO_SHOT_PROMPTS: dict[str, Callable[[str], str]] = {
    "shape": lambda v: f"a {v}",
    "colour": lambda v: f"something {v}",
    "background": lambda v: f"something on a {v} background",
    "size": lambda v: f"a {v} shape",
    "position": lambda v: f"a shape {POSITION_PHRASES[v]}",
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


def named_attributes(prompt: str) -> dict[str, str]:
    """The attributes a prompt names; ConfigError if it names none (nothing to judge)."""
    wanted = parse_caption(prompt)
    if not wanted:
        raise ConfigError(
            f"eval prompt {prompt!r} names no attribute of the toy world (a shape, colour, "
            f"background, size or position), e.g. {DEFAULT_PROMPTS[0]!r}"
        )
    return wanted


# The eval's step count is the toy pair's, so a default that changes the steps shows in
# `vqclip eval` with no flags; `--prior none` runs the plain loop for as many steps.
TOY_ITERATIONS: int = dict(PAIRS["toy"].defaults)["iterations"]


@dataclass(frozen=True)
class EvalSettings:
    """Loop settings shared by every method; checked here, before any model loads."""

    iterations: int = TOY_ITERATIONS
    cutn: int = 16
    lr: float = 0.1
    tv_weight: float = 0.0
    seed: int = 0
    precision: str = "auto"  # the decoder's and guides' compute dtype (the fast-path guard)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}: choose one of {PRECISIONS}")
        self.config(["a circle"], "overview", vqgan="toy", clips=["toy"])

    def config(
        self,
        prompts: Sequence[str],
        method: str,
        *,
        vqgan: str,
        clips: Sequence[str],
        overrides: Mapping[str, Any] | None = None,
    ) -> GenerateConfig:
        """The run for all prompts at once, one image each: the toy pair's defaults (so a lever
        made its default shows here), these settings, the method's, then `overrides`."""
        from vqclip.generate.config import pair_defaults
        from vqclip.weights.registry import resolve_pair

        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        defaults = pair_defaults(resolve_pair("toy"), overrides or {})
        values = {**defaults, **self._settings(prompts, vqgan, clips)}
        values.update(METHODS[method])
        values.update(overrides or {})
        return GenerateConfig.from_dict(values)

    def _settings(self, prompts: Sequence[str], vqgan: str, clips: Sequence[str]) -> dict:
        return dict(
            prompts=tuple(prompts),
            batch_size=len(prompts),
            size=(IMAGE_SIZE, IMAGE_SIZE),
            iterations=self.iterations,
            seed=self.seed,
            vqgan=vqgan,
            clip=tuple(clips),
            cutn=self.cutn,
            lr=self.lr,
            tv_weight=self.tv_weight,
            device="cpu",
            precision=self.precision,
        )


@dataclass
class PromptResult:
    prompt: str
    verdict: Verdict
    guide_yes: bool
    wanted: dict[str, str] = field(init=False)
    correct: dict[str, bool] = field(init=False)

    def __post_init__(self) -> None:
        self.wanted = named_attributes(self.prompt)
        self.correct = self.verdict.correct(self.wanted)

    @property
    def read(self) -> dict[str, bool]:
        """Per named attribute: what the judge reads, its reject head ignored. Shows which
        attributes the text steers while the judge still refuses the picture as a whole."""
        return {k: self.verdict.attributes[k] == v for k, v in self.wanted.items()}

    @property
    def success(self) -> bool:
        return all(self.correct.values())


@torch.no_grad()
def guide_similarity(
    clips: Sequence[CLIP], images: torch.Tensor, texts: Sequence[str]
) -> torch.Tensor:
    """(N, T): cosine similarity of each image (N, 3, H, W) to each text, summed over guides."""
    total = torch.zeros(len(images), len(texts))
    for clip in clips:
        size = clip.input_size
        view = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
        img = F.normalize(clip.encode_image(view).float(), dim=-1)
        txt = F.normalize(clip.encode_text_str(list(texts)).float(), dim=-1)
        total += (img @ txt.t()).cpu()
    return total


def guide_reading(clips: Sequence[CLIP], images: torch.Tensor, name: str) -> torch.Tensor:
    """(N,): the index into ATTRIBUTES[name] of the value the guides read in each image."""
    texts = [ZERO_SHOT_PROMPTS[name](v) for v in ATTRIBUTES[name]]
    return guide_similarity(clips, images, texts).argmax(1)


def guide_says_yes(
    clips: Sequence[CLIP], images: torch.Tensor, prompts: Sequence[str]
) -> list[bool]:
    """Whether the guides (similarities summed) read each image as its prompt: every named
    attribute is the nearest of its values, and the prompt is nearer than any reject caption."""
    wanted = [named_attributes(p) for p in prompts]
    yes = torch.ones(len(prompts), dtype=torch.bool)
    for name, values in ATTRIBUTES.items():
        named = [i for i, w in enumerate(wanted) if name in w]
        if named:
            read = guide_reading(clips, images[named], name)
            truth = torch.tensor([values.index(wanted[i][name]) for i in named])
            yes[named] &= read == truth
    rejects = [t for opts in REJECT_CAPTIONS.values() for t in opts]
    sims = guide_similarity(clips, images, [*prompts, *rejects])  # (N, N + R)
    own = sims.diagonal()
    return (yes & (own >= sims[:, len(prompts) :].amax(1))).tolist()


def generate_images(
    models: ToyModels,
    prompts: Sequence[str],
    method: str,
    settings: EvalSettings,
    *,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, float, str | None]:
    """All prompts as one batch through the normal loop: images (N, 3, 64, 64), seconds per
    prompt (the run's start included), and the loop's error if it stopped early (a NaN loss:
    the last good images)."""
    config = settings.config(
        prompts,
        method,
        vqgan=str(models.vqgan_path),
        clips=[str(p) for p in models.clip_paths],
        overrides=overrides,
    )
    # Timed from the run's construction: a start drawn from a prior (--init prior) is part of
    # a lever's cost.
    start = time.perf_counter()
    run = toy_run(config, models)
    error = None
    try:
        for _ in tqdm(run.iterate(), total=config.iterations, desc=method, disable=not progress):
            pass
        images = run.image()
    except GenerationError as e:
        error = str(e)
        images = run.last_good_image()
    return images.float().cpu(), (time.perf_counter() - start) / len(prompts), error


def judge_images(
    models: ToyModels, images: torch.Tensor, prompts: Sequence[str]
) -> list[PromptResult]:
    """The judge's and the guides' verdicts on image i as prompt i."""
    verdicts = models.judge.verdicts(images)
    guide = guide_says_yes(models.clips, images, prompts)
    return [PromptResult(p, v, y) for p, v, y in zip(prompts, verdicts, guide, strict=True)]


@dataclass
class MethodResult:
    method: str
    results: list[PromptResult]
    images: torch.Tensor  # (N, 3, 64, 64) in [0, 1]
    seconds_per_prompt: float
    error: str | None = None  # the loop stopped early; `images` are its last good ones

    def report(self) -> dict:
        """JSON-ready: the summary and every prompt's verdict."""
        return {
            "summary": summarise(self.results),
            "seconds_per_prompt": self.seconds_per_prompt,
            "error": self.error,
            "per_prompt": [
                {
                    "prompt": r.prompt,
                    "success": r.success,
                    "correct": r.correct,
                    "clean": r.verdict.clean,
                    "read": r.read,
                    "guide_yes": r.guide_yes,
                }
                for r in self.results
            ],
        }


def toy_run(config: GenerateConfig, models: ToyModels) -> Run:
    """A `Run` of `config` on the toy models, on the CPU, with the plug-ins it names (its
    prior)."""
    return Run(
        config,
        vqgan=models.vqgan,
        clips=models.clips,
        extensions=extensions_for(config),
        device="cpu",
    )


def run_method(
    models: ToyModels,
    prompts: Sequence[str],
    method: str,
    settings: EvalSettings,
    *,
    variant: str = "",
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> MethodResult:
    """Generate all prompts with one cutout method (and a variant's config overrides, its row
    labelled method+variant) and judge every image."""
    for p in prompts:
        named_attributes(p)
    images, seconds, error = generate_images(
        models, prompts, method, settings, overrides=overrides, progress=progress
    )
    label = f"{method}+{variant}" if variant else method
    return MethodResult(label, judge_images(models, images, prompts), images, seconds, error)


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
    return out


def split_by_kind(prompts: Sequence[str]) -> dict[str, list[int]]:
    """Prompt indices by how much they name: shape, colour and background, or all five."""
    groups: dict[str, list[int]] = {"shape+colour+background": [], "all five": []}
    for i, p in enumerate(prompts):
        groups["all five" if len(parse_caption(p)) == 5 else "shape+colour+background"].append(i)
    return {k: v for k, v in groups.items() if v}


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per method (and prompt kind), percentages."""
    cols = [*ATTRIBUTES, "clean", "overall", "guide_yes", "gap", "read", "s/prompt"]
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


def table_rows(result: MethodResult, prompts: Sequence[str]) -> dict[str, dict[str, float]]:
    """One table row per prompt kind of one method's results."""
    return {
        f"{result.method} [{group}]": {
            **summarise([result.results[i] for i in idx]),
            "s/prompt": result.seconds_per_prompt,
        }
        for group, idx in split_by_kind(prompts).items()
    }


def grid_png(images: torch.Tensor, cols: int = 10) -> bytes:
    """PNG bytes of images (N, 3, H, W) in [0, 1] laid out `cols` to a row, black padding."""
    from PIL import Image

    from vqclip.output import to_uint8

    n, _, h, w = images.shape
    rows = -(-n // cols)
    pad = images.new_zeros(rows * cols - n, 3, h, w)
    grid = torch.cat([images, pad]).view(rows, cols, 3, h, w)
    grid = grid.permute(2, 0, 3, 1, 4).reshape(3, rows * h, cols * w)  # (3, rows*h, cols*w)
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(grid)).save(buffer, format="PNG")
    return buffer.getvalue()
