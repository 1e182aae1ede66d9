"""Prompts: the "text:weight:stop|..." syntax, prompt embeddings and the CLIP loss of a prompt.

Syntax and loss follow Crowson's "z + quantize" notebook (method.md, step 7). Image prompts are
embedded by the generator through the same cutouts as the image being optimised; this module only
loads them.
"""

from __future__ import annotations

import functools
import io
import math
import re
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from vqclip.errors import ConfigError, VQClipError, VQClipWarning
from vqclip.generate.losses import replace_grad, spherical_distance
from vqclip.generate.story import story_parts

KINDS = ("text", "image", "noise")
_MAX_SEED = 2**63
_DOWNLOAD_TIMEOUT_S = 30

# A weight or stop field: a decimal float (sign, exponent allowed) or +-inf; no spaces, no nan.
_NUMBER = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?|inf(?:inity)?)", re.IGNORECASE
)
# "scheme://host" with nothing after the host: a colon that follows it starts a port.
_URL_HOST = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/:]*")
_URL = re.compile(r"https?://", re.IGNORECASE)


@dataclass(frozen=True)
class PromptSpec:
    """One prompt: its kind, what it says (text, image path or URL, or noise seed), its weight
    (negative pushes away) and its stop (the signed distance below which its gradient is cut)."""

    kind: str
    value: str | int
    weight: float = 1.0
    stop: float = -math.inf

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"PromptSpec.kind must be one of {', '.join(KINDS)}, got {self.kind!r}"
            )
        if self.kind == "noise":
            _check_seed(self.value)
        elif not isinstance(self.value, str) or not self.value.strip():
            raise ConfigError(f"a {self.kind} prompt needs a non-empty string, got {self.value!r}")
        object.__setattr__(self, "weight", _checked_weight(self.weight, self.value))
        object.__setattr__(self, "stop", _checked_stop(self.stop, self.value))


class Prompt(nn.Module):
    """The CLIP loss of one prompt (Crowson's `Prompt`).

    For cutout embeddings u and the prompt's embeddings v, d = spherical_distance(u, v) and the
    loss is |w| * mean(sign(w) * d) over cutouts and prompt embeddings. The gradient of a term is
    cut once sign(w) * d < stop, while its value is still counted. With a negative weight the
    stop applies to -d: stop=-1.2 stops pushing away once d > 1.2.
    """

    def __init__(self, embed: torch.Tensor, weight: float = 1.0, stop: float = -math.inf) -> None:
        super().__init__()
        if embed.ndim == 1:
            embed = embed[None]  # (1, D)
        if embed.ndim != 2 or embed.shape[0] == 0:
            raise ConfigError(
                f"a prompt embedding must be (P, D) or (D,), got shape {tuple(embed.shape)}"
            )
        self.weight = _checked_weight(weight, "Prompt")
        self.stop = _checked_stop(stop, "Prompt")
        # Derived from the prompt, not learned: nothing to save in a state dict.
        self.register_buffer("embed", F.normalize(embed.detach().float(), dim=-1), persistent=False)

    def forward(self, image_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cutout embeddings (N, D), or (B, N, D) for B images, -> (loss, mean distance), each a
        scalar or (B,). Each image's loss depends only on its own cutouts; the distance is
        detached, for reporting."""
        dim = self.embed.shape[-1]
        if image_embeds.ndim not in (2, 3) or image_embeds.shape[-1] != dim:
            raise ConfigError(
                f"cutout embeddings must be (N, {dim}) or (B, N, {dim}) for this prompt, got "
                f"{tuple(image_embeds.shape)}; embed prompts with the cutouts' CLIP model"
            )
        d = spherical_distance(image_embeds.unsqueeze(-2), self.embed)  # (..., N, P)
        signed = d * math.copysign(1.0, self.weight)
        signed = replace_grad(signed, signed.clamp(min=self.stop))
        loss = abs(self.weight) * signed.mean(dim=(-2, -1))
        return loss, d.detach().mean(dim=(-2, -1))


class TextEncoder(Protocol):
    """What `embed_text_prompt` needs of a CLIP model."""

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor: ...

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor: ...


# parsing


def _trailing_number(s: str) -> tuple[str, float] | None:
    """Split "head:<number>" into (head, number), or None if `s` does not end in a number field."""
    head, colon, tail = s.rpartition(":")
    tail = tail.strip()
    if not colon or not _NUMBER.fullmatch(tail):
        return None
    if tail.isascii() and tail.isdigit() and _URL_HOST.fullmatch(head):
        return None  # "http://host:8080" is a port, not a weight
    return head, float(tail)


def parse_prompt(s: str, kind: str = "text") -> PromptSpec:
    """Parse "value", "value:weight" or "value:weight:stop".

    Rule: at most two trailing fields are split off, from the right, each only if it is a
    number: a decimal float such as 2, -0.5, 1e-3, or inf / -inf, with no spaces inside it
    (spaces around it are fine, as in Crowson's parser: "a cat: 0.5"). So colons elsewhere stay
    in the text ("a 16:9 photo", "C:\\img.png", "https://x.com/a.png"), but a text that itself
    ends in ":<number>" loses it: "ratio 16:9" is "ratio 16" with weight 9. Keep such a text by
    giving both fields: "ratio 16:9:1:-inf". A URL's port is never a weight
    ("http://host:8080"). Whitespace around the text is stripped. For noise prompts the value
    is the integer seed ("42:0.5").
    """
    head, numbers = s.strip(), []
    for _ in range(2):
        split = _trailing_number(head)
        if split is None:
            break
        head, number = split
        numbers.insert(0, number)
    text = head.strip()
    if not text:
        raise ConfigError(f"prompt {s!r} has no {kind}: write it before the ':weight:stop' fields")
    weight = numbers[0] if numbers else 1.0
    stop = numbers[1] if len(numbers) == 2 else -math.inf
    value: str | int = _parse_seed(text) if kind == "noise" else text
    return PromptSpec(kind, value, weight, stop)


def parse_prompts(s: str, kind: str = "text") -> list[PromptSpec]:
    """Parse prompts separated by "|", e.g. "a red barn:1|blurry:-0.5". A blank string is no
    prompts; an empty piece between bars is an error."""
    if not s.strip():
        return []
    pieces = s.split("|")
    specs = []
    for i, piece in enumerate(pieces, 1):
        where = f"prompt {i} of {len(pieces)} in {s!r}"
        if not piece.strip():
            raise ConfigError(f"{where} is empty; remove the extra '|'")
        try:
            specs.append(parse_prompt(piece, kind))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return specs


@dataclass(frozen=True)
class Story:
    """A text prompt parsed once, the value that travels from the config to every reader: its
    parts (a story's, separated by "^"; one for a plain prompt; none for a blank one), each part's
    text, and each part's prompts (separated by "|")."""

    text: str
    part_texts: tuple[str, ...]
    parts: tuple[tuple[PromptSpec, ...], ...]

    @property
    def length(self) -> int:
        """The parts a schedule shows: a blank prompt is one (empty) part."""
        return max(1, len(self.parts))

    def specs(self, sign: int = 0) -> list[PromptSpec]:
        """Every part's prompts in order; `sign` 1: those of positive weight only, -1: of
        negative weight only."""
        return [
            spec
            for part in self.parts
            for spec in part
            if sign == 0 or (spec.weight > 0 if sign > 0 else spec.weight < 0)
        ]


@functools.lru_cache(maxsize=1024)
def parse_story(text: str) -> Story:
    """`text` parsed into its story parts and their prompts (ConfigError naming what is wrong);
    the same text gives the same (immutable) value without parsing it again."""
    if not text.strip():
        return Story(text, (), ())
    part_texts = tuple(story_parts(text))
    return Story(text, part_texts, tuple(tuple(parse_prompts(part)) for part in part_texts))


def parse_image_prompts(s: str) -> list[PromptSpec]:
    """Image prompts, paths or http(s) URLs, in the same syntax: "a.png:0.5:0.1|https://x/b.jpg"."""
    return parse_prompts(s, kind="image")


def parse_noise_prompts(seeds: Sequence[int], weights: Sequence[float] = ()) -> list[PromptSpec]:
    """Noise prompts from a list of seeds and one weight per seed (all 1 if none are given),
    the two lists users know from nerdyrodent's script. Unequal lengths are an error, not
    silently truncated as zip would."""
    if weights and len(weights) != len(seeds):
        raise ConfigError(
            f"give one noise prompt weight per seed: {len(seeds)} seeds {list(seeds)} but "
            f"{len(weights)} weights {list(weights)}"
        )
    weights = weights or [1.0] * len(seeds)
    return [PromptSpec("noise", seed, w) for seed, w in zip(seeds, weights, strict=True)]


# embeddings


def embed_text_prompt(clip: TextEncoder, text: str) -> torch.Tensor:
    """CLIP's unit-length embedding of `text`, (1, D) fp32, on the model's device."""
    tokens = clip.tokenize([text])
    if isinstance(clip, nn.Module):
        param = next(clip.parameters(), None)
        if param is not None:
            tokens = tokens.to(param.device)
    with torch.no_grad():
        embed = clip.encode_text(tokens).float()  # (1, D)
    return F.normalize(embed, dim=-1)


def warn_if_cut(text: str, context_length: int) -> None:
    """Warn (VQClipWarning) when `text` has more tokens than CLIP reads: it is cut to fit."""
    from vqclip.clip.tokenizer import default_tokenizer

    tokenizer = default_tokenizer()
    ids = tokenizer.encode(text)
    room = context_length - 2  # the start and end tokens
    if len(ids) > room:
        kept = tokenizer.decode(ids[:room])
        warnings.warn(
            f"prompt {text[:40]!r}... has {len(ids)} tokens but CLIP reads {room}; it was cut to "
            f"{kept!r}",
            VQClipWarning,
            stacklevel=2,
        )


def noise_embedding(seed: int, dim: int) -> torch.Tensor:
    """A (1, dim) N(0, I) embedding from its own generator seeded with `seed` (Crowson's noise
    prompt), on the CPU: the same seed gives the same embedding on every machine."""
    _check_seed(seed)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"noise embedding dim must be a positive integer, got {dim!r}")
    generator = torch.Generator().manual_seed(seed)
    return torch.empty(1, dim).normal_(generator=generator)


def load_image(source: str | Path) -> torch.Tensor:
    """Read an image file or http(s) URL as (3, H, W) float RGB in [0, 1]; alpha is dropped."""
    name = str(source)
    if _URL.match(name):
        fp: io.BytesIO | Path = io.BytesIO(_download(name))
    else:
        fp = Path(name).expanduser()
        if not fp.is_file():  # a symlink loop is not "missing": say which it is
            from vqclip.validation import why_not_a_file

            raise ConfigError(f"image {name!r} {why_not_a_file(fp)}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                rgb = _rgb_array(img)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as e:
        raise ConfigError(f"{name!r} is not an image that can be read ({e})") from None
    if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
        height, width = rgb.shape[:2]
        warnings.warn(
            f"image {name!r} is very large ({width}x{height}); it is resized for the run, "
            "but reading it takes a lot of memory",
            VQClipWarning,
            stacklevel=2,
        )
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)  # (3, H, W)


def _rgb_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of any mode. 16- and 32-bit greyscale (PIL's I;16 and I modes, e.g.
    16-bit PNGs) are scaled from their full range: PIL's own conversion clips them to 255."""
    if img.mode.startswith("I"):
        grey = np.asarray(img, dtype=np.float64)
        grey = np.clip(grey / 65535.0 * 255.0, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float64), 0, 1) * 255.0
        return np.repeat(grey.round().astype(np.uint8)[:, :, None], 3, axis=2)
    return np.array(img.convert("RGB"), dtype=np.uint8)


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        raise VQClipError(f"could not download image {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise VQClipError(
            f"could not download image {url}: {reason}. Check the network connection, or "
            "download the image and pass its path."
        ) from None


def _parse_seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"a noise prompt is an integer seed, got {text!r}") from None


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_SEED:
        raise ConfigError(f"a noise prompt seed must be an integer in [0, 2**63), got {seed!r}")


def _checked_weight(weight: object, prompt: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise ConfigError(f"prompt {prompt!r}: weight must be a finite number, got {weight!r}")
    if weight == 0:
        raise ConfigError(f"prompt {prompt!r}: weight 0 has no effect; remove the prompt instead")
    return float(weight)


def _checked_stop(stop: object, prompt: object) -> float:
    if isinstance(stop, bool) or not isinstance(stop, int | float) or math.isnan(stop):
        raise ConfigError(f"prompt {prompt!r}: stop must be a number or -inf, got {stop!r}")
    return float(stop)
