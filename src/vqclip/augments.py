"""Cutout augmentations, named by the two-letter codes nerdyrodent's VQGAN+CLIP users know.

Each code maps to one kornia augmentation with the parameters of method.md step 5. kornia draws
random parameters per sample, so one call augments the whole cutout batch. kornia takes its
randomness from torch's global RNG; `vqclip.cutouts` isolates it and seeds it from the run's
generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import kornia.augmentation as K
from torch import nn

from vqclip.errors import ConfigError

# helper functions


def _jitter(cut_size: int) -> nn.Module:
    return K.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.7)


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
