"""The judge: a small CNN that reads a toy-world image's attributes, or rejects it.

It is of another architecture than the guiding CLIP (convolutions and a dense head, no
transformer, no text), trained with its own seed (research/toy/train_judge.py in a source
checkout), and never used for guidance or in any training loss, so an image that fools the
guide is not thereby judged right. Its reject head says "no single clean object" (clutter,
noise, several objects, smeared or half-formed shapes...): without it the judge reads clutter
as some shape and inflates the scores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from vqclip.atomic import atomic_write_bytes, atomic_write_text
from vqclip.errors import ConfigError, WeightsNotFoundError
from vqclip.statedict import load_strict
from vqclip.toy.world import ATTRIBUTES, IMAGE_SIZE, Scene

FORMAT = "vqclip-toy-judge"


@dataclass(frozen=True)
class Verdict:
    """What the judge reads in one image: `clean` False means "no single clean object"."""

    clean: bool
    attributes: dict[str, str]
    reject_prob: float

    def correct(self, constraints: Mapping[str, str]) -> dict[str, bool]:
        """Per named attribute: right? A rejected image is wrong on every attribute."""
        return {k: self.clean and self.attributes[k] == v for k, v in constraints.items()}


class Judge(nn.Module):
    """Conv net on (B, 3, 64, 64) in [0, 1] -> logits per attribute and a reject logit."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            # GroupNorm, not BatchNorm: a verdict must not depend on what else is in the batch.
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.ReLU(inplace=True)
            )

        self.features = nn.Sequential(
            nn.Conv2d(3, w, 4, stride=2, padding=1),  # 32x32
            nn.ReLU(inplace=True),
            block(w, w),
            nn.MaxPool2d(2),  # 16x16
            block(w, 2 * w),
            nn.MaxPool2d(2),  # 8x8
            block(2 * w, 2 * w),
        )
        # The flattened 8x8 map keeps where things are, which position and size need.
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 64, 128), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({k: nn.Linear(128, len(v)) for k, v in ATTRIBUTES.items()})
        self.reject = nn.Linear(128, 1)
        self.width = width

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ConfigError(
                f"the judge reads (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) images, got "
                f"{tuple(images.shape)}"
            )
        h = self.trunk(self.features(images * 2 - 1))  # (B, 128)
        out = {k: head(h) for k, head in self.heads.items()}
        out["reject"] = self.reject(h).squeeze(1)  # (B,)
        return out

    @torch.no_grad()
    def verdicts(self, images: torch.Tensor, batch: int = 256) -> list[Verdict]:
        """One Verdict per image."""
        self.eval()
        result = []
        for chunk in images.split(batch):
            out = self(chunk.float())
            p_reject = torch.sigmoid(out["reject"]).tolist()
            picks = {k: out[k].argmax(1).tolist() for k in ATTRIBUTES}
            for i, p in enumerate(p_reject):
                attrs = {k: ATTRIBUTES[k][picks[k][i]] for k in ATTRIBUTES}
                result.append(Verdict(p < 0.5, attrs, p))
        return result


@torch.no_grad()
def score_scenes(judge: Judge, images: torch.Tensor, scenes: Sequence[Scene]) -> dict[str, float]:
    """Per-attribute accuracy and acceptance rate of the judge on images of known scenes."""
    verdicts = judge.verdicts(images)
    acc = {
        k: sum(v.correct({k: getattr(s, k)})[k] for v, s in zip(verdicts, scenes, strict=True))
        / len(scenes)
        for k in ATTRIBUTES
    }
    acc["clean"] = sum(v.clean for v in verdicts) / len(scenes)
    return acc


def save_judge(judge: Judge, path: str | os.PathLike) -> None:
    """Weights (.safetensors, fp16) and a JSON config beside them."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"save_judge writes .safetensors files, got {path}")
    tensors = {k: v.detach().half().contiguous() for k, v in judge.state_dict().items()}
    atomic_write_bytes(path, safetensors.torch.save(tensors))
    meta = {"format": FORMAT, "version": 1, "width": judge.width}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta) + "\n")


def load_judge(path: str | os.PathLike) -> Judge:
    """A judge saved by `save_judge`, in eval mode."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise WeightsNotFoundError(f"judge weights {path} (and {meta_path.name}) not found")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{meta_path} is not a toy judge config (format {FORMAT!r})")
    judge = Judge(width=int(meta["width"]))
    state = {k: v.float() for k, v in safetensors.torch.load_file(path).items()}
    load_strict(judge, state, source=str(path))
    return judge.eval().requires_grad_(False)
