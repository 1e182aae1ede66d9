"""The toy world: seeded, anti-aliased 64x64 images of one coloured shape, and their captions.

A scene is a shape (circle, square, triangle, star) of a colour on a background of another
colour, with a size and a position. Images are rendered in batches with torch: every shape is
an inside test in polar coordinates folded into one sector (one half-plane per shape), done on a
4x supersampled grid and averaged down, which is the anti-aliasing.

64x64 because the whole pipeline (VQGAN, two CLIPs, a judge, and the eval's generations) must
train and run in minutes on two CPU cores: every cost scales with the pixel count, and at 64 px
the smallest object is still ~14 px across, enough for the judge to tell a star from a circle.

Captions name any subset of the five attributes ("a large red circle on the left, on a grey
background", "a red circle", "something blue"); `satisfies` and `all_captions` say which
captions an image matches, for multi-positive contrastive training. Reject-class images
(`render_rejects`) are what a guide must not accept: clutter, noise, several objects, smeared,
half-formed, oversized or multicoloured shapes.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vqclip.errors import ConfigError

IMAGE_SIZE = 64
SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (0.86, 0.16, 0.16),
    "green": (0.16, 0.70, 0.24),
    "blue": (0.16, 0.31, 0.86),
    "yellow": (0.92, 0.82, 0.16),
    "purple": (0.59, 0.24, 0.75),
    "white": (0.96, 0.96, 0.96),
}
BACKGROUNDS = {
    "black": (0.06, 0.06, 0.06),
    "grey": (0.50, 0.50, 0.50),
    "white": (0.96, 0.96, 0.96),
    "blue": (0.16, 0.31, 0.86),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "centre")
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "background": tuple(BACKGROUNDS),
    "size": SIZES,
    "position": POSITIONS,
}
REJECT_KINDS = ("clutter", "noise", "several", "smeared", "half", "oversized", "patchy")
REJECT_CAPTIONS: dict[str, tuple[str, ...]] = {
    "clutter": ("clutter", "a cluttered picture", "random blobs of colour"),
    "noise": ("noise", "random noise"),
    "several": ("several shapes", "two shapes", "many shapes"),
    "smeared": ("a smeared shape", "a blurry shape"),
    "half": ("a half-formed shape", "a broken shape"),
    "oversized": ("an oversized shape", "a huge shape cut off by the edges"),
    "patchy": ("a multicoloured shape", "a patchy shape"),
}

# Object centres (x, y) in image fractions, jittered by +-_JITTER; radii by size.
_CENTRES = {
    "left": (0.29, 0.5),
    "right": (0.71, 0.5),
    "top": (0.5, 0.29),
    "bottom": (0.5, 0.71),
    "centre": (0.5, 0.5),
}
_JITTER = 0.03
_RADIUS = {"small": (0.10, 0.125), "large": (0.18, 0.21)}
_COLOUR_JITTER = 0.04
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
STYLES = 3  # caption templates per attribute subset


@dataclass(frozen=True)
class Scene:
    """One clean image's attributes."""

    shape: str
    colour: str
    background: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for name, allowed in ATTRIBUTES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"Scene.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if self.background == self.colour:
            raise ConfigError(
                f"Scene: a {self.colour} shape cannot be on a {self.background} background"
            )

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def label(self) -> tuple[int, ...]:
        """Index of each attribute value, in ATTRIBUTES order."""
        return tuple(ATTRIBUTES[n].index(getattr(self, n)) for n in ATTRIBUTES)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _choice(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(k, (n,), generator=g)


def _fold(phi: torch.Tensor, sectors: int, offset: float) -> torch.Tensor:
    """Angle within its sector of 2pi/sectors, centred on 0: in [-pi/sectors, pi/sectors)."""
    width = 2 * math.pi / sectors
    return torch.remainder(phi - offset + width / 2, width) - width / 2


def shape_coverage(
    shape: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    radius: torch.Tensor,
    angle: torch.Tensor,
    *,
    size: int = IMAGE_SIZE,
    supersample: int = SUPERSAMPLE,
) -> torch.Tensor:
    """Anti-aliased coverage (N, size, size) in [0, 1] of N shapes (indices into SHAPES).

    Centres and radii are fractions of the image side; `angle` rotates (radians). The radius is
    the circle's; the other shapes are scaled to look about as big.
    """
    s = size * supersample
    grid = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    inside = torch.zeros(len(shape), s, s, dtype=torch.bool)
    for kind in shape.unique().tolist():  # one shape at a time: a quarter of the trig work
        idx = (shape == kind).nonzero().squeeze(1)
        dx = grid.view(1, 1, s) - cx[idx].view(-1, 1, 1)  # (n, 1, s)
        dy = grid.view(1, s, 1) - cy[idx].view(-1, 1, 1)  # (n, s, 1)
        rho = torch.sqrt(dx * dx + dy * dy)  # (n, s, s)
        r = radius[idx].view(-1, 1, 1)
        if kind == 0:  # circle
            inside[idx] = rho <= r
            continue
        # Image y points down, so -pi/2 is "up"; the angle turns each shape about its centre.
        phi = torch.atan2(dy, dx) - angle[idx].view(-1, 1, 1)
        if kind == 1:  # square: edge normals at 0, 90, ...; half side 0.88 r
            inside[idx] = rho * torch.cos(_fold(phi, 4, 0.0)) <= 0.88 * r
        elif kind == 2:  # triangle, tip up: normals at 90, 210, 330 deg; apothem = R / 2
            inside[idx] = rho * torch.cos(_fold(phi, 3, math.pi / 2)) <= 0.65 * r
        else:  # star, tip up: fold to [0, pi/5], inside the line from tip (R, 0) to inner vertex
            folded = _fold(phi, 5, -math.pi / 2).abs()
            outer, inner = 1.3 * r, 0.55 * r
            ix, iy = inner * math.cos(math.pi / 5), inner * math.sin(math.pi / 5)
            px, py = rho * torch.cos(folded), rho * torch.sin(folded)
            inside[idx] = (ix - outer) * py - iy * (px - outer) >= 0
    return F.avg_pool2d(inside.float().unsqueeze(1), supersample).squeeze(1)


def _compose(base: torch.Tensor, coverage: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Paint colour (N, 3) over base (N, 3, H, W) with coverage (N, H, W)."""
    a = coverage.unsqueeze(1)
    return base * (1 - a) + colour.view(-1, 3, 1, 1) * a


def _palette(names: Sequence[str], table: Mapping[str, tuple[float, float, float]]) -> torch.Tensor:
    return torch.tensor([table[n] for n in names], dtype=torch.float32)


def _jitter_colour(rgb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    noise = (torch.rand(rgb.shape, generator=g) * 2 - 1) * _COLOUR_JITTER
    return (rgb + noise).clamp(0, 1)


def _flat(colour: torch.Tensor, size: int) -> torch.Tensor:
    return colour.view(-1, 3, 1, 1).expand(-1, 3, size, size).clone()


# scenes and clean images


def sample_scenes(n: int, generator: torch.Generator) -> list[Scene]:
    """n random scenes, every attribute uniform; the background is never the shape's colour."""
    colours, bgs = ATTRIBUTES["colour"], ATTRIBUTES["background"]
    shape = _choice(n, len(SHAPES), generator).tolist()
    colour = _choice(n, len(colours), generator).tolist()
    size = _choice(n, len(SIZES), generator).tolist()
    position = _choice(n, len(POSITIONS), generator).tolist()
    bg_draw = torch.rand(n, generator=generator).tolist()
    scenes = []
    for i in range(n):
        allowed = [b for b in bgs if b != colours[colour[i]]]
        bg = allowed[min(int(bg_draw[i] * len(allowed)), len(allowed) - 1)]
        scenes.append(
            Scene(SHAPES[shape[i]], colours[colour[i]], bg, SIZES[size[i]], POSITIONS[position[i]])
        )
    return scenes


def render(
    scenes: Sequence[Scene], generator: torch.Generator, *, size: int = IMAGE_SIZE
) -> torch.Tensor:
    """Images (N, 3, size, size) in [0, 1] of the scenes (jitter drawn from `generator`)."""
    n = len(scenes)
    if n == 0:
        return torch.zeros(0, 3, size, size)
    centres = torch.tensor([_CENTRES[s.position] for s in scenes])
    cx = centres[:, 0] + _uniform(n, -_JITTER, _JITTER, generator)
    cy = centres[:, 1] + _uniform(n, -_JITTER, _JITTER, generator)
    lo = torch.tensor([_RADIUS[s.size][0] for s in scenes])
    hi = torch.tensor([_RADIUS[s.size][1] for s in scenes])
    radius = lo + (hi - lo) * torch.rand(n, generator=generator)
    angle = _uniform(n, -0.2, 0.2, generator)
    shape = torch.tensor([SHAPES.index(s.shape) for s in scenes])
    fg = _jitter_colour(_palette([s.colour for s in scenes], COLOURS), generator)
    bg = _jitter_colour(_palette([s.background for s in scenes], BACKGROUNDS), generator)
    cov = shape_coverage(shape, cx, cy, radius, angle, size=size)
    return _compose(_flat(bg, size), cov, fg)


def sample_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[Scene]]:
    """n random clean images (N, 3, 64, 64) and their scenes."""
    scenes = sample_scenes(n, generator)
    return render(scenes, generator), scenes


# reject-class images


def _random_objects(n: int, g: torch.Generator, lo: float, hi: float) -> tuple[torch.Tensor, ...]:
    shape = _choice(n, len(SHAPES), g)
    cx, cy = _uniform(n, 0.1, 0.9, g), _uniform(n, 0.1, 0.9, g)
    return shape, cx, cy, _uniform(n, lo, hi, g), _uniform(n, -math.pi, math.pi, g)


def _any_colour(n: int, g: torch.Generator) -> torch.Tensor:
    """Half palette colours, half arbitrary RGB."""
    named = _palette(list(COLOURS), COLOURS)[_choice(n, len(COLOURS), g)]
    free = torch.rand(n, 3, generator=g)
    return torch.where(torch.rand(n, 1, generator=g) < 0.5, named, free)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with a per-image sigma (pixels), separable, reflect padding."""
    k = 15
    t = torch.arange(k, dtype=torch.float32) - k // 2
    w = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    w = w / w.sum(1, keepdim=True)  # (N, k)
    n, c, h, wd = x.shape
    y = F.pad(x.reshape(1, n * c, h, wd), (k // 2, k // 2, 0, 0), mode="reflect")
    y = F.conv2d(y, w.repeat_interleave(c, 0).view(n * c, 1, 1, k), groups=n * c)
    y = F.pad(y, (0, 0, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, w.repeat_interleave(c, 0).view(n * c, 1, k, 1), groups=n * c)
    return y.view(n, c, h, wd)


def _clean_backgrounds(n: int, g: torch.Generator, size: int) -> torch.Tensor:
    bgs = _palette(list(BACKGROUNDS), BACKGROUNDS)[_choice(n, len(BACKGROUNDS), g)]
    return _flat(_jitter_colour(bgs, g), size)


def _reject_one_kind(kind: str, n: int, g: torch.Generator, size: int) -> torch.Tensor:
    if kind == "noise":
        cells = int(torch.randint(2, 17, (), generator=g))
        coarse = torch.rand(n, 3, cells, cells, generator=g)
        smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        pixel = torch.rand(n, 3, size, size, generator=g)
        mix = torch.rand(n, 1, 1, 1, generator=g)
        return smooth * mix + pixel * (1 - mix)
    if kind in ("clutter", "several"):
        count = (4, 10) if kind == "clutter" else (2, 4)
        img = _clean_backgrounds(n, g, size)
        if kind == "clutter":
            img = torch.where(
                torch.rand(n, 1, 1, 1, generator=g) < 0.5,
                img,
                torch.rand(n, 3, 1, 1, generator=g).expand_as(img).clone(),
            )
        k = int(torch.randint(*count, (), generator=g))
        for _ in range(k):
            lo, hi = (0.04, 0.3) if kind == "clutter" else (0.08, 0.16)
            cov = shape_coverage(*_random_objects(n, g, lo, hi), size=size)
            img = _compose(img, cov, _any_colour(n, g))
        return img
    scenes = sample_scenes(n, g)
    if kind == "smeared":
        img = render(scenes, g, size=size)
        blurred = _blur(img, _uniform(n, 2.0, 5.0, g))
        # Motion smear: the average of copies shifted along a random direction.
        theta = _uniform(n, 0, math.pi, g)
        length = _uniform(n, 0.15, 0.35, g)
        steps = torch.linspace(-0.5, 0.5, 9)
        shift = steps.view(1, -1) * length.view(-1, 1)  # (N, 9)
        smear = torch.zeros_like(img)
        for j in range(9):
            tx, ty = shift[:, j] * torch.cos(theta) * 2, shift[:, j] * torch.sin(theta) * 2
            eye = torch.zeros(n, 2, 3)
            eye[:, 0, 0] = eye[:, 1, 1] = 1
            eye[:, 0, 2], eye[:, 1, 2] = tx, ty
            grid = F.affine_grid(eye, list(img.shape), align_corners=False)
            smear += F.grid_sample(img, grid, padding_mode="border", align_corners=False) / 9
        return torch.where(torch.rand(n, 1, 1, 1, generator=g) < 0.5, blurred, smear)
    fg = _jitter_colour(_palette([s.colour for s in scenes], COLOURS), g)
    bg = _flat(_jitter_colour(_palette([s.background for s in scenes], BACKGROUNDS), g), size)
    shape = torch.tensor([SHAPES.index(s.shape) for s in scenes])
    if kind == "oversized":
        cov = shape_coverage(
            shape,
            _uniform(n, 0.2, 0.8, g),
            _uniform(n, 0.2, 0.8, g),
            _uniform(n, 0.38, 0.7, g),
            _uniform(n, -0.3, 0.3, g),
            size=size,
        )
        return _compose(bg, cov, fg)
    centres = torch.tensor([_CENTRES[s.position] for s in scenes])
    radius = torch.tensor([sum(_RADIUS[s.size]) / 2 for s in scenes])
    cov = shape_coverage(shape, centres[:, 0], centres[:, 1], radius, torch.zeros(n), size=size)
    if kind == "half":
        # Cut away a random half-plane through a point near the centre, or punch holes.
        theta = _uniform(n, -math.pi, math.pi, g)
        off = _uniform(n, -0.3, 0.3, g) * radius
        grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        gx = grid.view(1, 1, -1) - centres[:, 0].view(-1, 1, 1)
        gy = grid.view(1, -1, 1) - centres[:, 1].view(-1, 1, 1)
        keep = (
            gx * torch.cos(theta).view(-1, 1, 1) + gy * torch.sin(theta).view(-1, 1, 1)
        ) < off.view(-1, 1, 1)
        holes = (
            F.interpolate(
                torch.rand(n, 1, 6, 6, generator=g),
                size=(size, size),
                mode="bilinear",
                align_corners=False,
            )[:, 0]
            > 0.45
        )
        cut = torch.where(torch.rand(n, 1, 1, generator=g) < 0.5, keep, holes)
        return _compose(bg, cov * cut.float(), fg)
    # patchy: the silhouette filled with blocks of several colours
    cells = int(torch.randint(2, 6, (), generator=g))
    palette = _palette(list(COLOURS), COLOURS)
    blocks = palette[torch.randint(len(COLOURS), (n, cells, cells), generator=g)]  # (N, c, c, 3)
    fill = F.interpolate(blocks.permute(0, 3, 1, 2), size=(size, size), mode="nearest")
    a = cov.unsqueeze(1)
    return bg * (1 - a) + fill * a


def render_rejects(
    n: int,
    generator: torch.Generator,
    *,
    kinds: Sequence[str] = REJECT_KINDS,
    size: int = IMAGE_SIZE,
) -> tuple[torch.Tensor, list[str]]:
    """n reject-class images (N, 3, size, size) and their kinds, kinds drawn uniformly."""
    unknown = [k for k in kinds if k not in REJECT_KINDS]
    if unknown or not kinds:
        raise ConfigError(f"kinds must be a non-empty subset of {REJECT_KINDS}, got {kinds!r}")
    drawn = [kinds[i] for i in _choice(n, len(kinds), generator).tolist()]
    out = torch.zeros(n, 3, size, size)
    for kind in dict.fromkeys(drawn):
        idx = [i for i, k in enumerate(drawn) if k == kind]
        out[idx] = _reject_one_kind(kind, len(idx), generator, size).clamp(0, 1)
    return out, drawn


# captions


def caption_text(constraints: Mapping[str, str], style: int = 0) -> str:
    """The caption naming exactly `constraints` (attribute -> value), in template `style`."""
    unknown = [k for k in constraints if k not in ATTRIBUTES]
    if unknown or not constraints:
        raise ConfigError(
            f"constraints must name some of {tuple(ATTRIBUTES)}, got {dict(constraints)}"
        )
    size, colour, shape = (constraints.get(k) for k in ("size", "colour", "shape"))
    if shape or size:
        noun = "a " + " ".join(w for w in (size, colour, shape or "shape") if w)
    elif colour:
        noun = (f"something {colour}", f"a {colour} shape", f"a {colour} object")[style % 3]
    else:
        noun = ("something", "a shape", "an object")[style % 3]
    text = noun
    if "position" in constraints:
        text += " " + POSITION_PHRASES[constraints["position"]]
    if "background" in constraints:
        sep = ", " if "position" in constraints and style % 2 == 0 else " "
        text += f"{sep}on a {constraints['background']} background"
    return text


def parse_caption(text: str) -> dict[str, str]:
    """The attribute constraints a world caption names (inverse of `caption_text`)."""
    rest = text.lower().strip()
    found: dict[str, str] = {}
    m = re.search(r"on an? (\w+) background", rest)
    if m:
        if m.group(1) not in BACKGROUNDS:
            raise ConfigError(f"unknown background {m.group(1)!r} in {text!r}")
        found["background"] = m.group(1)
        rest = rest[: m.start()] + rest[m.end() :]
    for pos, phrase in POSITION_PHRASES.items():
        if phrase in rest:
            found["position"] = pos
            rest = rest.replace(phrase, " ")
    words = re.findall(r"[a-z]+", rest)
    for name in ("shape", "colour", "size"):
        hits = [w for w in words if w in ATTRIBUTES[name]]
        if len(hits) > 1:
            raise ConfigError(f"{text!r} names more than one {name}: {hits}")
        if hits:
            found[name] = hits[0]
    return found


def satisfies(scene: Scene, constraints: Mapping[str, str]) -> bool:
    """Whether the scene has every attribute value the constraints name."""
    return all(getattr(scene, k) == v for k, v in constraints.items())


def all_captions(scene: Scene) -> list[str]:
    """Every caption (each non-empty attribute subset, each style) the scene satisfies."""
    names = list(ATTRIBUTES)
    out: dict[str, None] = {}
    for k in range(1, len(names) + 1):
        for subset in itertools.combinations(names, k):
            c = {n: getattr(scene, n) for n in subset}
            for style in range(STYLES):
                out[caption_text(c, style)] = None
    return list(out)


def sample_constraints(
    scene: Scene, generator: torch.Generator, p_full: float = 0.35
) -> dict[str, str]:
    """A random non-empty subset of the scene's attributes (all of them with prob. p_full)."""
    if float(torch.rand((), generator=generator)) < p_full:
        return scene.as_dict()
    while True:
        keep = (torch.rand(len(ATTRIBUTES), generator=generator) < 0.5).tolist()
        if any(keep):
            return {n: getattr(scene, n) for n, k in zip(ATTRIBUTES, keep, strict=True) if k}


def random_caption(scene: Scene, generator: torch.Generator) -> tuple[str, dict[str, str]]:
    """A random caption the scene satisfies, and the constraints it names."""
    c = sample_constraints(scene, generator)
    style = int(torch.randint(STYLES, (), generator=generator))
    return caption_text(c, style), c
