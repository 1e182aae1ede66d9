"""Cutout augmentations, named by the two-letter codes nerdyrodent's VQGAN+CLIP users know.

Each code maps to one kornia augmentation with the parameters of method.md step 5 (colour
jitter is our own batched version, ~100x faster). kornia draws
random parameters per sample, so one call augments the whole cutout batch. kornia takes its
randomness from torch's global RNG; `vqclip.cutouts` isolates it and seeds it from the run's
generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import kornia.augmentation as K
import torch
from torch import nn

from vqclip.errors import ConfigError

# helper functions


# RGB -> YIQ (NTSC): Y is luma; a hue shift is a rotation of (I, Q), saturation scales them.
_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_INV = torch.linalg.inv(_YIQ)


class ColourJitter(nn.Module):
    """Brightness, contrast, saturation and hue jitter of a batch, as one 3x3 colour matrix and
    one contrast blend per image: kornia's ColorJitter with the same ranges did four passes
    of HSV conversions and masks, ~8 s for 960 64 px cutouts on one CPU thread against ~0.05 s
    here. Hue turns the chroma plane of YIQ (a linear stand-in for HSV's hue), so the whole
    jitter stays differentiable and smooth.

    Factors are drawn uniformly: brightness and contrast and saturation in [1 - a, 1 + a], hue in
    [-h, h] turns; each image is jittered with probability p. Randomness comes from torch's
    global RNG, like kornia's (`vqclip.cutouts` seeds it per step).
    """

    def __init__(
        self, brightness: float, contrast: float, saturation: float, hue: float, p: float
    ) -> None:
        super().__init__()
        self.ranges = (brightness, contrast, saturation, hue)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        b, c, s, h = (
            (torch.rand(n) * 2 - 1) * r + (0.0 if i == 3 else 1.0)
            for i, r in enumerate(self.ranges)
        )
        on = torch.rand(n) < self.p
        b, c, s = (torch.where(on, v, torch.ones(n)) for v in (b, c, s))
        angle = torch.where(on, h, torch.zeros(n)) * 2 * math.pi
        cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
        chroma = torch.zeros(n, 3, 3)
        chroma[:, 0, 0] = 1.0
        chroma[:, 1, 1], chroma[:, 1, 2] = cos, -sin
        chroma[:, 2, 1], chroma[:, 2, 2] = sin, cos
        matrix = _YIQ_INV @ chroma @ _YIQ * b.view(n, 1, 1)  # (n, 3, 3)
        matrix = matrix.to(device=x.device, dtype=x.dtype)
        # Contrast blends with the mean luma: fold it into the same matrix and an offset.
        y = torch.bmm(matrix, x.reshape(n, 3, -1))  # (n, 3, HW)
        mean = (_YIQ[0].to(y) @ y).mean(dim=1).view(n, 1, 1)  # (n, 1, 1)
        c = c.to(device=x.device, dtype=x.dtype).view(n, 1, 1)
        out = torch.addcmul(mean * (1 - c), y, c).clamp(0, 1).view_as(x)
        # Images left alone are passed through exactly (the matrix round trip is not).
        return torch.where(on.to(x.device).view(n, 1, 1, 1), out, x)


def _jitter(cut_size: int) -> nn.Module:
    return ColourJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.7)


def _sharpness(cut_size: int) -> nn.Module:
    return K.RandomSharpness(sharpness=0.3, p=0.5)


def _gaussian_noise(cut_size: int) -> nn.Module:
    return K.RandomGaussianNoise(mean=0.0, std=1.0, p=0.5)


def _perspective(cut_size: int) -> nn.Module:
    return K.RandomPerspective(distortion_scale=0.7, p=0.7)


def _rotation(cut_size: int) -> nn.Module:
    return K.RandomRotation(degrees=15.0, p=0.7)


def _affine(cut_size: int) -> nn.Module:
    return K.RandomAffine(
        degrees=15.0, translate=(0.1, 0.1), shear=5.0, padding_mode="zeros", p=0.7
    )


def _elastic(cut_size: int) -> nn.Module:
    return K.RandomElasticTransform(p=0.7)


def _thin_plate_spline(cut_size: int) -> nn.Module:
    return K.RandomThinPlateSpline(scale=0.8, p=0.7)


def _per_sample(aug: K.AugmentationBase2D, p: float) -> nn.Module:
    # kornia's crops treat p as an all-or-nothing gate on the whole batch (a crop may change the
    # shape). Ours keep the cutout size, so a per-cutout gate is safe, and it is what "p .5" means
    # for the other codes: about half of the cutouts get it.
    aug.p = p
    return aug


def _crop(cut_size: int) -> nn.Module:
    # The cutout already has the crop size, so nerdyrodent's pad_if_needed crop is an identity;
    # reflect-padding by an eighth makes it a real random shift.
    crop = K.RandomCrop(
        size=(cut_size, cut_size), padding=max(1, cut_size // 8), padding_mode="reflect", p=1.0
    )
    return _per_sample(crop, 0.5)


def _erasing(cut_size: int) -> nn.Module:
    return K.RandomErasing(scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), p=0.7)


def _resized_crop(cut_size: int) -> nn.Module:
    # "resample" interpolates the crop, so gradients reach every source pixel it covers.
    crop = K.RandomResizedCrop(
        size=(cut_size, cut_size),
        scale=(0.1, 1.0),
        ratio=(3 / 4, 4 / 3),
        cropping_mode="resample",
        p=1.0,
    )
    return _per_sample(crop, 0.5)


# main table and builder

AUGMENTS: dict[str, tuple[str, Callable[[int], nn.Module]]] = {
    "Ji": ("colour jitter 0.1, p .7", _jitter),
    "Sh": ("sharpness 0.3, p .5", _sharpness),
    "Gn": ("gaussian noise std 1, p .5", _gaussian_noise),
    "Pe": ("perspective 0.7, p .7", _perspective),
    "Ro": ("rotation 15 deg, p .7", _rotation),
    "Af": ("affine 15 deg, translate .1, shear 5, p .7", _affine),
    "Et": ("elastic transform, p .7", _elastic),
    "Ts": ("thin plate spline 0.8, p .7", _thin_plate_spline),
    "Cr": ("random crop with reflect padding, p .5", _crop),
    "Er": ("random erasing scale .1-.4, p .7", _erasing),
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


def build_augments(codes: Sequence[str], cut_size: int) -> nn.Module:
    """The augmentations of `codes`, applied in order; identity for an empty list.

    `cut_size` is the cutout side, needed by the crop augmentations (Cr, Re).
    """
    codes = check_augment_codes(codes)
    if cut_size < 1:
        raise ConfigError(f"cut_size must be >= 1, got {cut_size}")
    if not codes:
        return nn.Identity()
    return nn.Sequential(*(AUGMENTS[c][1](cut_size) for c in codes))
