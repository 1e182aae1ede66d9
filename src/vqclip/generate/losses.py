"""Losses of the VQGAN+CLIP loop and the gradient tricks it relies on (method.md steps 4, 7, 8).

Crowson's "z + quantize" notebook (2021) is the reference for `spherical_distance`,
`replace_grad` and `clamp_with_grad`; the regularisers are what users of the popular scripts
expect, with vqclip's anchor pulling toward the initial z rather than toward zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vqclip.errors import ConfigError


def _mean_square(d: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,). A side of length 1 has no neighbours, hence no variation."""
    if d.numel() == 0:
        return d.new_zeros(d.shape[0])
    return d.pow(2).flatten(1).mean(1)


def _check_weight(name: str, weight: float) -> None:
    if not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {weight!r}")


# gradient tricks


class ReplaceGrad(torch.autograd.Function):
    """Forward returns `x_forward`; backward hands the incoming gradient to `x_backward`."""

    @staticmethod
    def forward(ctx, x_forward: torch.Tensor, x_backward: torch.Tensor) -> torch.Tensor:
        ctx.shape = x_backward.shape
        return x_forward

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, grad_out.sum_to_size(ctx.shape)


def replace_grad(x_forward: torch.Tensor, x_backward: torch.Tensor) -> torch.Tensor:
    """The value of `x_forward` with the gradient of `x_backward` (Crowson's replace_grad).

    Used for the straight-through quantiser and for a prompt's `stop`.
    """
    return ReplaceGrad.apply(x_forward, x_backward)


class ClampWithGrad(torch.autograd.Function):
    """Clamp whose backward keeps only gradients that move out-of-range values back in range."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        # Gradient descent moves x by -grad: for x above hi that points back in when grad > 0,
        # for x below lo when grad < 0; in range, x - clamp(x) = 0 and everything passes.
        keep = grad_out * (x - x.clamp(ctx.lo, ctx.hi)) >= 0
        return grad_out * keep, None, None


def clamp_with_grad(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamp `x` to [lo, hi]; the gradient reaches out-of-range values only when it pushes them
    back into range (grad_in = grad * [grad * (x - clamp(x)) >= 0]), so saturated pixels are
    not stuck with a zero gradient as under a plain clamp."""
    return ClampWithGrad.apply(x, lo, hi)


# losses


def spherical_distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance 2 * arcsin(||u - v|| / 2)^2 between the directions of `u`
    and `v` along the last dimension, broadcasting the others; computed in fp32.

    Inputs are normalised here, so any lengths may be passed. 0 for equal directions, pi^2/8
    for orthogonal ones, pi^2/2 for opposite ones.
    """
    u = F.normalize(u.float(), dim=-1)
    v = F.normalize(v.float(), dim=-1)
    # For unit vectors arcsin(||u - v|| / 2) = atan2(||u - v||, ||u + v||), half the angle.
    # arcsin loses digits near opposite vectors (slope -> inf, NaN past 1); atan2 does not, and
    # its gradient stays finite there.
    half_angle = torch.atan2((u - v).norm(dim=-1), (u + v).norm(dim=-1))
    return half_angle.pow(2).mul(2)


def tv_loss(img: torch.Tensor) -> torch.Tensor:
    """Total variation of (B, C, H, W) images or latents, per item (B,).

    The mean squared difference between horizontal neighbours plus that between vertical
    neighbours. Squares rather than absolute values: their gradient is smooth at zero, so flat
    regions do not get a gradient that flips sign every step.
    """
    if img.ndim != 4:
        raise ConfigError(f"tv_loss expects a (B, C, H, W) tensor, got shape {tuple(img.shape)}")
    dx = img[..., :, 1:] - img[..., :, :-1]  # (B, C, H, W-1)
    dy = img[..., 1:, :] - img[..., :-1, :]  # (B, C, H-1, W)
    return _mean_square(dx) + _mean_square(dy)


def init_anchor_loss(z: torch.Tensor, z0: torch.Tensor, weight: float) -> torch.Tensor:
    """`weight` / 2 * mean squared distance of each latent in `z` to the initial latent `z0`,
    (B,): the scale of Crowson's notebook, so its init_weight values carry over.

    This anchors the image to where it started (the init image, if one was given). It is not
    nerdyrodent's init_weight, which pulls z toward zero with a weight decaying as 1/(2i+1), so it
    ignores the init image and fades out; vqclip's anchor is the initial z and its weight constant.
    """
    _check_weight("init_weight", weight)
    if z.shape != z0.shape:
        raise ConfigError(
            f"init_anchor_loss: z has shape {tuple(z.shape)} but the initial z has "
            f"{tuple(z0.shape)}; they must match"
        )
    return weight / 2 * _mean_square(z - z0.detach())
