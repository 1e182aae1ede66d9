"""Cutout augmentations, named by the two-letter codes nerdyrodent's VQGAN+CLIP users know.

The parameters are those of method.md step 5. Six codes are our own batched versions, which
draw their random numbers on the images' device from the run's generator and never copy
anything to the host (the step can run without host syncs, which a fast GPU needs):

- Af, Ro, Pe: each draws one 3x3 map per cutout; a run of them in the list (the default
  "Af Pe") is composed into one map and resampled by one `grid_sample`, so the cutout is
  interpolated once, not once per augmentation.
- Ji: brightness, contrast, saturation and hue as one colour matrix per cutout.
- Er: a zeroed rectangle per cutout, as a mask from coordinate comparisons.
- Gn: additive Gaussian noise.

The rest (Sh, Et, Ts, Cr, Re) are kornia's, an optional dependency (`pip install
vqclip[augments]`) imported only when one of them is built. kornia draws from torch's global
RNG, so each of those is run with the global RNG seeded from the run's generator and restored
afterwards. Every augmentation gates each cutout on its own with its probability p.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vqclip.devices import constant
from vqclip.errors import ConfigError

if TYPE_CHECKING:
    import kornia.augmentation

# RGB -> YIQ (NTSC): Y is luma; a hue shift is a rotation of (I, Q), saturation scales them.
_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)
_YIQ_INV = tuple(map(tuple, torch.linalg.inv(torch.tensor(_YIQ, dtype=torch.float64)).tolist()))
# Constants of the step are made with `constant` (copied to the GPU once, not every step: a copy
# from host memory makes the host wait for the GPU), so the step runs without host syncs.


def _uniform(n: int, low: float, high: float, like: torch.Tensor, gen: torch.Generator):
    """(n,) uniform in [low, high) on like's device, in float32."""
    u = torch.rand(n, generator=gen, device=like.device)
    return u * (high - low) + low


def _gate(n: int, p: float, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(n,) bool: which cutouts get the augmentation."""
    return torch.rand(n, generator=gen, device=like.device) < p


@contextlib.contextmanager
def _global_rng_seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (CPU, and `device` if CUDA) for kornia; restore it on exit."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        for d in cuda:
            with torch.cuda.device(d):
                torch.cuda.manual_seed(seed)
        yield


def _affine_inverse(
    angle: torch.Tensor,
    shear: torch.Tensor,
    shift: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """(n, 3, 3) maps from output to input pixel coordinates of the affine warps that shear
    along x by `shear`, rotate by `angle` (radians, both (n,)) about the image centre, then
    shift by `shift` (n, 2) pixels. Pixel coordinates: x right, y down, the image spans
    [0, width] x [0, height]."""
    n = angle.shape[0]
    centre = constant((width / 2, height / 2), angle.device)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # forward: p' = R S (p - c) + c + t  =>  inverse: p = S^-1 R^T (p' - c - t) + c
    rt = torch.stack([cos, sin, -sin, cos], dim=1).view(n, 2, 2)
    s_inv = torch.zeros(n, 2, 2, device=angle.device)
    s_inv[:, 0, 0] = s_inv[:, 1, 1] = 1.0
    s_inv[:, 0, 1] = -tan
    linear = s_inv @ rt
    offset = centre - (linear @ (centre + shift).unsqueeze(-1)).squeeze(-1)
    out = torch.zeros(n, 3, 3, device=angle.device)
    out[:, :2, :2] = linear
    out[:, :2, 2] = offset
    out[:, 2, 2] = 1.0
    return out


def homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) homographies taking each of the 4 points src (n, 4, 2) to dst (n, 4, 2);
    coordinates of order 1 (the 8x8 solve is in their dtype)."""
    n = src.shape[0]
    x, y = src.unbind(-1)  # (n, 4)
    u, v = dst.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # (n, 8, 8)
    b = torch.cat([u, v], dim=1).unsqueeze(-1)  # (n, 8, 1)
    h = torch.linalg.solve_ex(a, b)[0].squeeze(-1)  # no error check: no host sync
    return torch.cat([h, torch.ones(n, 1, device=src.device, dtype=src.dtype)], 1).view(n, 3, 3)


def warp(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Resample x (n, C, H, W) by per-image maps `inverse` (n, 3, 3) from output to input
    pixel coordinates; bilinear, zeros outside the input."""
    n, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=x.device, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, h * w, 3)
    src = points @ inverse.float().transpose(1, 2)  # (n, HW, 3)
    w_h = src[..., 2:]  # the homogeneous coordinate: any sign, never near 0 for these maps
    src = src[..., :2] / torch.where(w_h.abs() < 1e-6, torch.full_like(w_h, 1e-6), w_h)
    # grid_sample's align_corners=False coordinates: -1 and 1 are the outer pixel edges.
    grid = (src * constant((2 / w, 2 / h), x.device) - 1).view(n, h, w, 2)
    # Always sampled in float32: torch 2.13's bfloat16 grid_sample backward on the CPU
    # corrupts the heap (aborts and segfaults within a few dozen warps of 224 px cutouts).
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(x.dtype)


# the augmentations


class Geometric(nn.Module):
    """A random warp per cutout; `inverse_maps` draws (n, 3, 3) maps from output to input
    pixel coordinates, the identity for cutouts the gate leaves alone."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def inverse_maps(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def gated(self, maps: torch.Tensor, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        on = _gate(len(x), self.p, x, gen).view(-1, 1, 1)
        return torch.where(on, maps, torch.eye(3, device=x.device))

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return warp(x, self.inverse_maps(x, gen))


class RandomAffine(Geometric):
    """Rotation in +-degrees, shift in +-translate of the side, shear along x in +-shear
    degrees, about the centre; zeros outside (kornia's RandomAffine with those arguments)."""

    def __init__(self, degrees: float, translate: float, shear: float, p: float) -> None:
        super().__init__(p)
        self.degrees, self.translate, self.shear = degrees, translate, shear

    def inverse_maps(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        rad = math.pi / 180
        angle = _uniform(n, -self.degrees * rad, self.degrees * rad, x, gen)
        shift = _uniform(2 * n, -self.translate, self.translate, x, gen).view(n, 2)
        shift = shift * constant((w, h), x.device)
        shear = _uniform(n, -self.shear * rad, self.shear * rad, x, gen)
        return self.gated(_affine_inverse(angle, shear, shift, h, w), x, gen)


class RandomPerspective(Geometric):
    """Each corner moves inward by up to distortion_scale / 2 of the side, on each axis
    (kornia's RandomPerspective, "basic" sampling); zeros outside."""

    def __init__(self, distortion_scale: float, p: float) -> None:
        super().__init__(p)
        self.distortion_scale = distortion_scale

    def inverse_maps(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        # In units of the side (float32 solves stay well conditioned), then in pixels.
        corners = constant(((0, 0), (1, 0), (1, 1), (0, 1)), x.device)
        inward = constant(((1, 1), (-1, 1), (-1, -1), (1, -1)), x.device)
        u = torch.rand(n, 4, 2, generator=gen, device=x.device)
        moved = corners + inward * (self.distortion_scale / 2) * u  # where each corner goes
        # output -> input: the moved corners back to the image's corners
        unit = homography(moved, corners.expand(n, 4, 2))
        pixels = constant((w, h, 1), x.device)
        maps = pixels.view(1, 3, 1) * unit / pixels.view(1, 1, 3)  # S H S^-1
        return self.gated(maps, x, gen)


class Warps(nn.Module):
    """Consecutive geometric augmentations as one resample: their maps are composed."""

    def __init__(self, *parts: Geometric) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # x -> A -> B: an output pixel of B comes from B^-1, then A^-1, so maps chain left to right
        inverse = self.parts[0].inverse_maps(x, gen)
        for part in self.parts[1:]:
            inverse = inverse @ part.inverse_maps(x, gen)
        return warp(x, inverse)


class _ColourProduct(torch.autograd.Function):
    """offset + matrix @ x for (n, 1, 1), (n, 3, 3), (n, 3, P): torch.baddbmm, with a backward
    that multiplies by the transposed matrix as a (n, 3, 3) @ (n, 3, P) product. Autograd's own
    backward for x makes it (n, P, 3) @ (n, 3, 3), several times slower on a CPU for these
    shapes."""

    @staticmethod
    def forward(ctx, offset: torch.Tensor, matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(matrix, x)
        return torch.baddbmm(offset, matrix, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        matrix, x = ctx.saved_tensors
        need_offset, need_matrix, need_x = ctx.needs_input_grad
        grad_offset = grad.sum(dim=(1, 2), keepdim=True) if need_offset else None
        grad_matrix = torch.bmm(grad, x.transpose(1, 2)) if need_matrix else None
        grad_x = torch.bmm(matrix.transpose(1, 2), grad) if need_x else None
        return grad_offset, grad_matrix, grad_x


class ColourJitter(nn.Module):
    """Brightness, contrast, saturation and hue jitter of a batch, as one 3x3 colour matrix and
    one contrast blend per image: kornia's ColorJitter with the same ranges did four passes
    of HSV conversions and masks, ~8 s for 960 64 px cutouts on one CPU thread against ~0.05 s
    here. Hue turns the chroma plane of YIQ (a linear stand-in for HSV's hue), so the whole
    jitter stays differentiable and smooth.

    Factors are drawn uniformly: brightness and contrast and saturation in [1 - a, 1 + a], hue in
    [-h, h] turns; each image is jittered with probability p.
    """

    def __init__(
        self, brightness: float, contrast: float, saturation: float, hue: float, p: float
    ) -> None:
        super().__init__()
        self.ranges = (brightness, contrast, saturation, hue)
        self.p = p

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        b, c, s, h = (
            _uniform(n, -r, r, x, gen) + (0.0 if i == 3 else 1.0) for i, r in enumerate(self.ranges)
        )
        on = _gate(n, self.p, x, gen)
        angle = h * 2 * math.pi
        cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
        chroma = torch.zeros(n, 3, 3, device=x.device)
        chroma[:, 0, 0] = 1.0
        chroma[:, 1, 1], chroma[:, 1, 2] = cos, -sin
        chroma[:, 2, 1], chroma[:, 2, 2] = sin, cos
        yiq, yiq_inv = constant(_YIQ, x.device), constant(_YIQ_INV, x.device)
        matrix = yiq_inv @ chroma @ yiq * b.view(n, 1, 1)  # (n, 3, 3)
        # Contrast blends with the mean luma of the colour-turned image, which is linear in
        # the image: the luma row of the matrix times the channel means, no pass over y.
        channel_mean = x.mean(dim=(2, 3), dtype=torch.promote_types(x.dtype, torch.float32))
        mean = ((yiq[0] @ matrix) * channel_mean).sum(1)  # (n,)
        c = c.view(n, 1, 1)
        # out = clamp(c * M x + (1 - c) * mean, 0, 1): one product with a per-image offset.
        # Images left alone get the identity, no offset and no clamp, so they pass through
        # exactly, without a full-size select in either pass.
        on3 = on.view(n, 1, 1)
        eye = torch.eye(3, device=x.device).expand(n, 3, 3)
        scaled = torch.where(on3, matrix * c, eye).to(x.dtype)
        offset = torch.where(on3, (1 - c) * mean.view(n, 1, 1), 0.0).to(x.dtype)  # (n, 1, 1)
        out = _ColourProduct.apply(offset, scaled, x.reshape(n, 3, -1))  # (n, 3, HW)
        low = torch.where(on3, 0.0, -math.inf).to(x.dtype)
        return out.clamp(low, torch.where(on3, 1.0, math.inf).to(x.dtype)).view_as(x)


class RandomErasing(nn.Module):
    """A rectangle of `scale` of the area and aspect ratio in `ratio` set to 0 (kornia's
    RandomErasing: the ratio is uniform below 1 or above 1, each half the time)."""

    def __init__(self, scale: tuple[float, float], ratio: tuple[float, float], p: float) -> None:
        super().__init__()
        self.scale, self.ratio, self.p = scale, ratio, p

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        area = _uniform(n, *self.scale, x, gen) * (h * w)
        lo, hi = self.ratio
        below = _uniform(n, lo, min(hi, 1.0), x, gen)
        above = _uniform(n, max(lo, 1.0), hi, x, gen)
        ratio = torch.where(_gate(n, 0.5, x, gen), below, above)
        eh = (area * ratio).sqrt().round().clamp(1, h)
        ew = (area / ratio).sqrt().round().clamp(1, w)
        y0 = (torch.rand(n, generator=gen, device=x.device) * (h - eh + 1)).floor()
        x0 = (torch.rand(n, generator=gen, device=x.device) * (w - ew + 1)).floor()
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (
            (rows >= y0.view(n, 1, 1))
            & (rows < (y0 + eh).view(n, 1, 1))
            & (cols >= x0.view(n, 1, 1))
            & (cols < (x0 + ew).view(n, 1, 1))
        )
        erase = inside & _gate(n, self.p, x, gen).view(n, 1, 1)
        return x.masked_fill(erase.unsqueeze(1), 0.0)


class GaussianNoise(nn.Module):
    """Additive N(0, std^2) noise on each gated cutout."""

    def __init__(self, std: float, p: float) -> None:
        super().__init__()
        self.std, self.p = std, p

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        on = _gate(len(x), self.p, x, gen).to(x.dtype).view(-1, 1, 1, 1)
        return x + noise * (self.std * on)


def _kornia(code: str):
    """kornia.augmentation, or a ConfigError naming the extra that installs it."""
    try:
        import kornia.augmentation
    except ImportError as e:
        raise ConfigError(
            f"augment {code} needs kornia, which is not installed: pip install 'vqclip[augments]' "
            f"(or leave {code} out; the default augments {' '.join(DEFAULT_AUGMENTS)} do not "
            "need it)"
        ) from e
    return kornia.augmentation


class Kornia(nn.Module):
    """A kornia augmentation, its global-RNG draws seeded from the run's generator."""

    def __init__(self, aug: kornia.augmentation.AugmentationBase2D, p: float) -> None:
        super().__init__()
        # Per cutout: kornia's crops otherwise gate a whole batch at once (a crop may change
        # the shape); ours keep the cutout size, so "p .5" means about half of the cutouts.
        aug.p = p
        self.aug = aug

    @property
    def p(self) -> float:
        return self.aug.p

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (), generator=gen, device=gen.device))
        with _global_rng_seeded(seed, x.device):
            return self.aug(x)


def _crop(cut_size: int) -> nn.Module:
    # The cutout already has the crop size, so nerdyrodent's pad_if_needed crop is an identity;
    # reflect-padding by an eighth makes it a real random shift.
    pad = max(1, cut_size // 8)
    crop = _kornia("Cr").RandomCrop((cut_size, cut_size), padding=pad, padding_mode="reflect")
    return Kornia(crop, 0.5)


def _resized_crop(cut_size: int) -> nn.Module:
    # "resample" interpolates the crop, so gradients reach every source pixel it covers.
    crop = _kornia("Re").RandomResizedCrop(
        (cut_size, cut_size), scale=(0.1, 1.0), ratio=(3 / 4, 4 / 3), cropping_mode="resample"
    )
    return Kornia(crop, 0.5)


AUGMENTS: dict[str, tuple[str, Callable[[int], nn.Module]]] = {
    "Ji": ("colour jitter 0.1, p .7", lambda c: ColourJitter(0.1, 0.1, 0.1, 0.1, p=0.7)),
    "Sh": (
        "sharpness 0.3, p .5",
        lambda c: Kornia(_kornia("Sh").RandomSharpness(sharpness=0.3), 0.5),
    ),
    "Gn": ("gaussian noise std 1, p .5", lambda c: GaussianNoise(std=1.0, p=0.5)),
    "Pe": ("perspective 0.7, p .7", lambda c: RandomPerspective(0.7, p=0.7)),
    "Ro": ("rotation 15 deg, p .7", lambda c: RandomAffine(15.0, 0.0, 0.0, p=0.7)),
    "Af": (
        "affine 15 deg, translate .1, shear 5, p .7",
        lambda c: RandomAffine(15.0, 0.1, 5.0, p=0.7),
    ),
    "Et": (
        "elastic transform, p .7",
        lambda c: Kornia(_kornia("Et").RandomElasticTransform(), 0.7),
    ),
    "Ts": (
        "thin plate spline 0.8, p .7",
        lambda c: Kornia(_kornia("Ts").RandomThinPlateSpline(0.8), 0.7),
    ),
    "Cr": ("random crop with reflect padding, p .5", _crop),
    "Er": (
        "random erasing scale .1-.4, p .7",
        lambda c: RandomErasing((0.1, 0.4), (0.3, 1 / 0.3), p=0.7),
    ),
    "Re": ("random resized crop scale .1-1, p .5", _resized_crop),
}
DEFAULT_AUGMENTS: tuple[str, ...] = ("Af", "Pe", "Ji", "Er")


def check_augment_codes(codes: Sequence[str]) -> tuple[str, ...]:
    """`codes` as a tuple; ConfigError naming the unknown ones and the valid ones."""
    if isinstance(codes, str):
        raise ConfigError(
            f"augments must be a list of two-letter codes, got the string {codes!r}; "
            f"e.g. {list(DEFAULT_AUGMENTS)}"
        )
    unknown = [c for c in codes if c not in AUGMENTS]
    if unknown:
        valid = ", ".join(f"{c} ({desc})" for c, (desc, _) in AUGMENTS.items())
        raise ConfigError(f"unknown augment code(s) {unknown}; valid codes: {valid}")
    return tuple(codes)


class Augments(nn.Module):
    """The augmentations of a list of codes, applied in order: `augs(x, generator)`.

    Consecutive geometric ones (Af, Ro, Pe) run as one `Warps` stage. Every random number
    comes from `generator`, which must live on x's device.
    """

    def __init__(self, codes: Sequence[str], cut_size: int) -> None:
        super().__init__()
        codes = check_augment_codes(codes)
        if cut_size < 1:
            raise ConfigError(f"cut_size must be >= 1, got {cut_size}")
        self.codes = codes
        self.parts = nn.ModuleList(AUGMENTS[c][1](cut_size) for c in codes)
        stages: list[nn.Module] = []
        for part in self.parts:
            if isinstance(part, Geometric) and stages and isinstance(stages[-1], Warps):
                stages[-1].parts.append(part)
            else:
                stages.append(Warps(part) if isinstance(part, Geometric) else part)
        self.stages = stages  # a plain list: the parts above hold the modules

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x, gen)
        return x


def build_augments(codes: Sequence[str], cut_size: int) -> Augments:
    """`Augments` of `codes`; `cut_size` is the cutout side, needed by Cr and Re."""
    return Augments(codes, cut_size)
