import math

import pytest
import torch

from vqclip.errors import ConfigError
from vqclip.generate.losses import (
    clamp_with_grad,
    init_anchor_loss,
    replace_grad,
    spherical_distance,
    tv_loss,
)

# spherical_distance


@pytest.mark.parametrize(
    ("u", "v", "expected"),
    [
        ([1.0, 0.0], [1.0, 0.0], 0.0),
        ([1.0, 0.0], [0.0, 1.0], math.pi**2 / 8),
        ([1.0, 0.0], [-1.0, 0.0], math.pi**2 / 2),
        ([3.0, 0.0], [0.0, 0.5], math.pi**2 / 8),  # lengths do not matter
    ],
)
def test_spherical_distance_known_values(u, v, expected):
    d = spherical_distance(torch.tensor(u), torch.tensor(v))
    assert d.item() == pytest.approx(expected, abs=1e-6)


def test_spherical_distance_broadcasts_over_leading_dims():
    u = torch.randn(3, 1, 8)
    v = torch.randn(4, 8)
    d = spherical_distance(u, v)
    assert d.shape == (3, 4)
    assert d[2, 1] == pytest.approx(spherical_distance(u[2, 0], v[1]).item(), abs=1e-6)
    assert torch.allclose(d, spherical_distance(v, u), atol=1e-6)


def test_spherical_distance_is_fp32_and_accurate_for_opposite_half_vectors():
    u = torch.randn(16, 32).half().requires_grad_(True)
    d = spherical_distance(u, -u)
    assert d.dtype == torch.float32
    assert torch.allclose(d, torch.full_like(d, math.pi**2 / 2), atol=1e-5)
    d.sum().backward()
    assert torch.isfinite(u.grad).all()


def test_spherical_distance_matches_crowson_arcsin_formula():
    u = torch.nn.functional.normalize(torch.randn(50, 16, dtype=torch.float64), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(50, 16, dtype=torch.float64), dim=-1)
    crowson = (u - v).norm(dim=-1).div(2).arcsin().pow(2).mul(2)
    assert torch.allclose(spherical_distance(u, v).double(), crowson, atol=1e-6)


# replace_grad


def test_replace_grad_returns_forward_value_and_sends_gradient_to_backward_input():
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = torch.tensor([10.0], requires_grad=True)
    out = replace_grad(a * 2, b * 3)
    assert torch.equal(out, torch.tensor([2.0, 4.0, 6.0]))
    out.sum().backward()
    assert a.grad is None
    assert b.grad.item() == pytest.approx(9.0)  # 3 elements x d(3b)/db, summed to b's shape


# clamp_with_grad


def test_clamp_with_grad_forward_clamps():
    x = torch.tensor([-0.5, 0.5, 1.5])
    assert torch.equal(clamp_with_grad(x, 0.0, 1.0), torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.parametrize(
    ("x", "grad", "expected"),
    [
        (1.5, 2.0, 2.0),  # above range, descent (-grad) moves it down: kept
        (1.5, -2.0, 0.0),  # above range, descent moves it further up: cut
        (-0.5, -2.0, -2.0),  # below range, descent moves it up: kept
        (-0.5, 2.0, 0.0),  # below range, descent moves it further down: cut
        (0.5, 2.0, 2.0),  # in range: passes either way
        (0.5, -2.0, -2.0),
    ],
)
def test_clamp_with_grad_backward_only_pushes_back_into_range(x, grad, expected):
    t = torch.tensor([x], requires_grad=True)
    clamp_with_grad(t, 0.0, 1.0).backward(torch.tensor([grad]))
    assert t.grad.item() == expected


def test_plain_clamp_would_cut_the_restoring_gradient():
    # The reason clamp_with_grad exists: a plain clamp leaves a saturated pixel stuck.
    t = torch.tensor([1.5], requires_grad=True)
    t.clamp(0.0, 1.0).backward(torch.tensor([2.0]))
    assert t.grad.item() == 0.0


# tv_loss


def test_tv_loss_zero_for_constant_and_known_value_for_ramp():
    const = torch.full((1, 3, 4, 5), 0.7)
    assert tv_loss(const).tolist() == [0.0]
    ramp = torch.arange(5.0).expand(1, 2, 4, 5)  # steps of 1 along W, none along H
    assert tv_loss(ramp).tolist() == pytest.approx([1.0])


def test_tv_loss_per_image_and_single_pixel_side():
    imgs = torch.stack([torch.zeros(3, 4, 4), torch.rand(3, 4, 4)])
    loss = tv_loss(imgs)
    assert loss.shape == (2,)
    assert loss[0] == 0 and loss[1] > 0
    column = torch.rand(2, 3, 6, 1)  # no horizontal neighbours
    assert torch.isfinite(tv_loss(column)).all()
    assert tv_loss(column)[0] > 0


def test_tv_loss_rejects_wrong_rank():
    with pytest.raises(ConfigError, match="B, C, H, W"):
        tv_loss(torch.zeros(3, 4, 4))


# init_anchor_loss


def test_init_anchor_loss_is_half_weight_times_mse_to_initial_z():
    z0 = torch.randn(2, 4, 3, 3)
    z = z0.clone()
    z[1] += 2.0
    z.requires_grad_(True)
    loss = init_anchor_loss(z, z0, weight=0.5)
    assert loss.shape == (2,)
    assert loss.tolist() == pytest.approx([0.0, 0.5 / 2 * 4.0])


def test_init_anchor_loss_pulls_toward_z0_not_zero():
    z0 = torch.full((1, 2, 2, 2), 3.0)
    z = torch.full((1, 2, 2, 2), 1.0, requires_grad=True)
    init_anchor_loss(z, z0, weight=1.0).sum().backward()
    assert (z.grad < 0).all()  # descent increases z toward 3, away from 0


def test_init_anchor_loss_does_not_train_z0():
    z0 = torch.randn(1, 2, 2, 2, requires_grad=True)
    z = torch.randn(1, 2, 2, 2, requires_grad=True)
    init_anchor_loss(z, z0, weight=1.0).sum().backward()
    assert z0.grad is None


@pytest.mark.parametrize("weight", [-1.0, math.inf, math.nan])
def test_init_anchor_loss_rejects_bad_weight(weight):
    with pytest.raises(ConfigError, match="init_weight"):
        init_anchor_loss(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), weight)


def test_init_anchor_loss_rejects_shape_mismatch():
    with pytest.raises(ConfigError, match="must match"):
        init_anchor_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 4, 4), 1.0)
