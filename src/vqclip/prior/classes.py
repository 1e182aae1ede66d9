"""A class-conditional prior's class, read from the prompt by CLIP (zero-shot classification).

Each class name is put in the prior's prompt templates ("itap of a {}." ...), embedded by every
guide CLIP, the template embeddings averaged and normalised (CLIP's zero-shot recipe). The
image's positive text prompts (every story part) are embedded the same way; a class scores the
cosine similarity summed over the prompts by weight and over the CLIPs by their weights, and
the best one is taken when the prompt names it clearly enough: when its zero-shot probability
(a softmax of 100 x the weighted mean similarity over the classes, CLIP's own logit scale) is
at least the prior's `class_threshold` (0: always the nearest). Otherwise the image draws
without a class, and the note says so.

Embedding a thousand names in several templates is a few seconds on a GPU and minutes on a CPU,
so the class embeddings are kept on disk per CLIP (keyed by a fingerprint of its text tower)
and per list of names and templates.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn.functional as F

from vqclip.atomic import atomic_write_bytes

LOGIT_SCALE = 100.0  # CLIP's learned temperature, exp(logit_scale), for the released models
BATCH = 256


def templates_of(prior: Any) -> tuple[str, ...]:
    return tuple(getattr(prior, "class_templates", ("a {}",)))


def threshold_of(prior: Any) -> float:
    return float(getattr(prior, "class_threshold", 0.0))


def _fingerprint(clip: torch.nn.Module) -> str:
    """A short hash of a CLIP's text tower (its projection, final norm and first embeddings):
    two CLIPs with the same fingerprint embed text alike."""
    digest = hashlib.sha256()
    for tensor in (clip.text_projection, clip.ln_final.weight, clip.token_embedding.weight[:64]):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _cache_file(clip: torch.nn.Module, names: Sequence[str], templates: Sequence[str]) -> Path:
    from vqclip.weights.cache import cache_root

    key = hashlib.sha256("\n".join([*names, "", *templates]).encode()).hexdigest()[:16]
    return cache_root() / "class_embeddings" / f"{_fingerprint(clip)}-{key}.safetensors"


@torch.no_grad()
def class_embeddings(
    clip: torch.nn.Module, names: Sequence[str], templates: Sequence[str], *, cache: bool = True
) -> torch.Tensor:
    """(classes, D) unit vectors: each name in every template, embedded, averaged, normalised.
    With one template the embedding of that one text (no averaging). Cached on disk when
    there is more than one template and `cache`."""
    if len(templates) == 1:
        texts = [templates[0].format(n) for n in names]
        return F.normalize(clip.encode_text_str(texts).float(), dim=-1)
    path = _cache_file(clip, names, templates) if cache else None
    if path is not None and path.is_file():
        try:
            stored = safetensors.torch.load_file(path)["embeddings"]
            if stored.shape[0] == len(names):
                return stored.to(clip.token_embedding.weight.device)
        except (OSError, ValueError, KeyError, safetensors.SafetensorError):
            pass  # a damaged cache file is recomputed and replaced
    rows = []
    for name in names:
        rows += [template.format(name) for template in templates]
    embeds = torch.cat(
        [
            F.normalize(clip.encode_text_str(rows[i : i + BATCH]).float(), dim=-1)
            for i in range(0, len(rows), BATCH)
        ]
    )
    out = F.normalize(embeds.view(len(names), len(templates), -1).mean(1), dim=-1)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = safetensors.torch.save({"embeddings": out.cpu().contiguous()})
            atomic_write_bytes(path, data)
        except OSError:
            pass  # no cache folder: computed again next time
    return out


class ClassChooser:
    """Chooses a class of `prior` (its `class_names`) for prompts, by the guide CLIPs."""

    def __init__(
        self, prior: Any, clips: Sequence[torch.nn.Module], clip_weights: Sequence[float], device
    ) -> None:
        self.names = tuple(getattr(prior, "class_names", ()) or prior.condition.class_names)
        self.threshold = threshold_of(prior)
        self.clips = list(clips)
        self.clip_weights = list(clip_weights)
        self.device = device
        templates = templates_of(prior)
        cache = os.environ.get("VQCLIP_NO_CLASS_CACHE") is None
        self.known = [class_embeddings(c, self.names, templates, cache=cache) for c in clips]

    @torch.no_grad()
    def choose(self, text: str) -> tuple[int | None, dict[str, Any]]:
        """(class or None, a note for the image's metadata) for prompt string `text`."""
        from vqclip.generate.prompts import parse_story

        specs = parse_story(text).specs(1)
        if not specs:
            return None, {"prior_class": None, "prior_class_from": "no text prompt"}
        weights = torch.tensor([s.weight for s in specs], device=self.device)
        score = torch.zeros(self.known[0].shape[0], device=self.device)
        for clip, names, clip_weight in zip(self.clips, self.known, self.clip_weights, strict=True):
            texts = F.normalize(clip.encode_text_str([s.value for s in specs]).float(), dim=-1)
            score += clip_weight * (weights @ (texts @ names.t().to(texts.device)))
        best = int(score.argmax())
        note: dict[str, Any] = {"prior_class": best, "prior_class_name": self.names[best]}
        if self.threshold > 0:
            scale = float(weights.sum()) * sum(abs(w) for w in self.clip_weights)
            p = F.softmax(LOGIT_SCALE * score / scale, dim=0)
            note["prior_class_p"] = round(float(p[best]), 4)
            if float(p[best]) < self.threshold:
                return None, {
                    "prior_class": None,
                    "prior_class_from": "no class named (nearest "
                    f"{self.names[best]!r}, p {float(p[best]):.2f} < {self.threshold:g})",
                }
        note["prior_class_from"] = "prompt"
        return best, note
