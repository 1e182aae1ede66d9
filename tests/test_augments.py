import math
import sys

import kornia.augmentation as K
import pytest
import torch

from vqclip.errors import ConfigError
from vqclip.generate.augments import (
    AUGMENTS,
    DEFAULT_AUGMENTS,
    Augments,
    ColourJitter,
    GaussianNoise,
    Geometric,
    Kornia,
    RandomAffine,
    RandomErasing,
    RandomPerspective,
    Warps,
    build_augments,
    check_augment_codes,
    homography,
    warp,
)

# code -> class (kornia's wrapped in Kornia) and the per-cutout probability of method.md step 5
EXPECTED = {
    "Ji": (ColourJitter, 0.7),
    "Sh": (K.RandomSharpness, 0.5),
    "Gn": (GaussianNoise, 0.5),
    "Pe": (RandomPerspective, 0.7),
    "Ro": (RandomAffine, 0.7),
    "Af": (RandomAffine, 0.7),
    "Et": (K.RandomElasticTransform, 0.7),
    "Ts": (K.RandomThinPlateSpline, 0.7),
    "Cr": (K.RandomCrop, 0.5),
    "Er": (RandomErasing, 0.7),
    "Re": (K.RandomResizedCrop, 0.5),
}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def only(code, cut_size=32):
    (part,) = build_augments([code], cut_size=cut_size).parts
    return part


def test_every_code_maps_to_its_class_and_probability():
    assert set(AUGMENTS) == set(EXPECTED)
    for code, (cls, p) in EXPECTED.items():
        part = only(code)
        if isinstance(part, Kornia):
            assert isinstance(part.aug, cls), code
            assert part.aug.p_batch == 1.0, code  # per cutout, never all-or-nothing
        else:
            assert isinstance(part, cls), code
        assert part.p == p, code


def test_codes_apply_in_the_given_order_and_warps_fuse():
    augs = build_augments(["Pe", "Af", "Ji", "Ro", "Sh"], cut_size=32)
    assert [type(a) for a in augs.parts] == [
        RandomPerspective,
        RandomAffine,
        ColourJitter,
        RandomAffine,
        Kornia,
    ]
    # Pe and Af run as one resample; Ro, after Ji, as another
    assert [type(s) for s in augs.stages] == [Warps, ColourJitter, Warps, Kornia]
    assert [type(p) for p in augs.stages[0].parts] == [RandomPerspective, RandomAffine]
    assert DEFAULT_AUGMENTS == ("Af", "Pe", "Ji", "Er")


@pytest.mark.parametrize("code", sorted(AUGMENTS))
def test_gradient_flows_through_each_augmentation(code):
    augs = Augments([code], cut_size=32)
    part = augs.parts[0]
    (part.aug if isinstance(part, Kornia) else part).p = 1.0  # the transform, not the identity
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = augs(x, gen())
    assert y.shape == x.shape
    assert not torch.allclose(y, x), "augmentation did nothing"
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("code", sorted(AUGMENTS))
def test_each_augmentation_gates_each_cutout_and_follows_the_generator(code):
    augs = build_augments([code], cut_size=16)
    x = 0.2 + 0.6 * torch.rand(200, 3, 16, 16, generator=gen(5))
    g = gen(1)
    a = augs(x, g)
    b = augs(x, g)
    assert torch.equal(a, augs(x, gen(1)))
    assert not torch.equal(a, b), "the generator's state did not advance"
    before = torch.get_rng_state()
    augs(x, gen(2))
    assert torch.equal(torch.get_rng_state(), before), "the global RNG was touched"
    changed = (a - x).flatten(1).abs().amax(1) > 1e-5
    assert abs(changed.float().mean().item() - EXPECTED[code][1]) < 0.12


def test_empty_list_is_identity():
    augs = build_augments([], cut_size=32)
    x = torch.rand(2, 3, 8, 8)
    assert augs(x, gen()) is x


def test_unknown_code_lists_valid_codes():
    with pytest.raises(ConfigError) as err:
        build_augments(["Af", "Xx"], cut_size=32)
    msg = str(err.value)
    assert "'Xx'" in msg
    assert all(code in msg for code in AUGMENTS)


def test_string_instead_of_list_is_rejected():
    # "AfPe" would otherwise iterate as characters and give a confusing error
    with pytest.raises(ConfigError, match="list of two-letter codes"):
        check_augment_codes("AfPe")


def test_bad_cut_size_is_rejected():
    with pytest.raises(ConfigError, match="cut_size"):
        build_augments(["Cr"], cut_size=0)


def _luma(x):
    return (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)


def test_colour_jitter_factors_act_as_named():
    # Mid-grey, mildly coloured pixels: no jitter below pushes a channel out of [0, 1].
    x = 0.45 + 0.1 * torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    bright = ColourJitter(0.1, 0.0, 0.0, 0.0, p=1.0)(x, gen())
    ratio = (bright / x).flatten(1)  # one brightness factor per image, within its range
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)
    assert ratio.min() >= 0.9 - 1e-5 and ratio.max() <= 1.1 + 1e-5 and ratio.std() > 0.01
    hue = ColourJitter(0.0, 0.0, 0.0, 0.5, p=1.0)(x, gen())  # a hue turn keeps luma, changes colour
    assert torch.allclose(_luma(hue), _luma(x), atol=1e-4) and not torch.allclose(hue, x)
    grey = ColourJitter(0.0, 0.0, 1.0, 0.0, p=1.0)(x, gen())  # saturation in [0, 2]: luma kept
    assert torch.allclose(_luma(grey), _luma(x), atol=1e-4)
    contrast = ColourJitter(0.0, 0.5, 0.0, 0.0, p=1.0)(x, gen())  # contrast keeps the mean luma
    assert torch.allclose(_luma(contrast).mean((1, 2)), _luma(x).mean((1, 2)), atol=1e-4)
    assert torch.equal(ColourJitter(0.5, 0.5, 0.5, 0.5, p=0.0)(x, gen()), x)


def test_colour_jitter_passes_cutouts_left_alone_through_exactly_even_out_of_range():
    # Resampled cutouts overshoot [0, 1] a little (bicubic lobes): the jitter's clamp must
    # apply only to the cutouts it jitters.
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.4 - 0.2
    out = ColourJitter(0.3, 0.3, 0.3, 0.3, p=0.5)(x, gen())
    same = (out == x).flatten(1).all(1)
    assert 4 < int(same.sum()) < 28  # about half are left alone, bit for bit
    assert out[~same].min() >= 0 and out[~same].max() <= 1
    assert torch.equal(ColourJitter(0.3, 0.3, 0.3, 0.3, p=0.0)(x, gen()), x)


def test_colour_jitter_gradient_matches_finite_differences():
    # Contrast blends with the image's mean luma, so the gradient also flows through the mean.
    x = 0.45 + 0.1 * torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    jitter = ColourJitter(0.2, 0.5, 0.3, 0.1, p=0.5)
    x = x.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: jitter(v, gen(3)), (x,))


def test_warps_of_bf16_cutouts_sample_in_fp32():
    # torch's bf16 grid_sample backward on the CPU corrupts the heap (aborts within a few
    # dozen warps like these), so warps sample in fp32 and hand back bf16.
    maps = RandomPerspective(0.5, p=1.0).inverse_maps(torch.zeros(8, 3, 96, 96), gen())
    x = torch.rand(8, 3, 96, 96, generator=torch.Generator().manual_seed(4)).bfloat16()
    out = warp(x, maps)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, warp(x.float(), maps).bfloat16())
    warps = build_augments(["Af", "Pe"], cut_size=96)
    for seed in range(40):
        y = x.clone().requires_grad_(True)
        warps(y, gen(seed)).sum().backward()
        assert y.grad.dtype == torch.bfloat16 and bool(y.grad.isfinite().all())


# geometry of the batched warps


def _shift_map(dx, dy):
    """Output -> input map of a shift of the picture by (dx, dy) pixels."""
    return torch.tensor([[1.0, 0.0, -dx], [0.0, 1.0, -dy], [0.0, 0.0, 1.0]])


def test_warp_identity_shift_and_quarter_turn_are_exact():
    x = torch.rand(1, 3, 12, 12, generator=gen(0))
    torch.testing.assert_close(warp(x, torch.eye(3)[None]), x, atol=1e-5, rtol=0)
    shifted = warp(x, _shift_map(3, -2)[None])
    expected = torch.zeros_like(x)
    expected[..., :10, 3:] = x[..., 2:, :9]
    torch.testing.assert_close(shifted, expected, atol=1e-5, rtol=0)
    # a quarter turn about the centre maps pixel centres onto pixel centres
    turn = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 12.0], [0.0, 0.0, 1.0]])
    turned = warp(x, turn[None])
    assert any(torch.allclose(turned, torch.rot90(x, k, (2, 3)), atol=1e-5) for k in (1, 3))


def test_affine_maps_invert_the_forward_transform():
    aug = RandomAffine(15.0, 0.1, 5.0, p=1.0)
    x = torch.zeros(64, 3, 20, 30)
    g = gen(4)
    inverse = aug.inverse_maps(x, g)
    rad = math.pi / 180
    g = gen(4)  # the same draws, in the same order, rebuilt forward
    angle = (torch.rand(64, generator=g) * 2 - 1) * 15 * rad
    shift = ((torch.rand(128, generator=g) * 2 - 1) * 0.1).view(64, 2) * torch.tensor([30, 20])
    shear = (torch.rand(64, generator=g) * 2 - 1) * 5 * rad
    for i in range(64):
        c, s = math.cos(angle[i]), math.sin(angle[i])
        rot = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        sh = torch.tensor([[1, math.tan(shear[i]), 0], [0, 1, 0], [0, 0, 1.0]])
        forward = _shift_map(15 + shift[i, 0], 10 + shift[i, 1]).inverse()
        forward = forward @ rot @ sh @ _shift_map(15, 10)
        torch.testing.assert_close(forward @ inverse[i], torch.eye(3), atol=1e-5, rtol=0)
    assert angle.abs().max() > 10 * rad and shift.abs().max() > 2.5


def test_homography_takes_the_points_where_asked():
    src = torch.rand(8, 4, 2, generator=gen(1)) * 0.3 + torch.tensor(
        [[0, 0], [0.7, 0], [0.7, 0.7], [0, 0.7]]
    )
    dst = torch.rand(8, 4, 2, generator=gen(2))
    h = homography(src, dst)
    mapped = torch.cat([src, torch.ones(8, 4, 1)], -1) @ h.transpose(1, 2)
    torch.testing.assert_close(mapped[..., :2] / mapped[..., 2:], dst, atol=1e-4, rtol=0)


def test_perspective_shrinks_the_picture_into_a_quadrilateral():
    aug = RandomPerspective(0.7, p=1.0)
    x = torch.ones(200, 1, 32, 32)
    out = aug(x, gen(0))
    corners = out[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]  # corners move inward by U(0, 0.35)
    assert (corners == 0).float().mean() > 0.9
    assert out[:, 0, 14:18, 14:18].min() > 0.999  # the middle stays inside
    kept = out.mean((1, 2, 3))  # the quadrilateral's area: from about 0.3^2 up to nearly 1
    assert kept.min() > 0.05 and kept.max() < 0.95 and kept.std() > 0.05


class _Fixed(Geometric):
    def __init__(self, inverse):
        super().__init__(p=1.0)
        self.inverse = inverse

    def inverse_maps(self, x, gen):
        return self.inverse.expand(len(x), 3, 3)


def test_fused_warps_equal_the_warps_one_after_another():
    # A shift, then a quarter turn: they do not commute, so the order of composition shows.
    turn = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 16.0], [0.0, 0.0, 1.0]])
    shift = _shift_map(4, 0)
    x = torch.rand(2, 3, 16, 16, generator=gen(3))
    fused = Warps(_Fixed(shift), _Fixed(turn))(x, gen())
    one_by_one = warp(warp(x, shift[None].expand(2, 3, 3)), turn[None].expand(2, 3, 3))
    torch.testing.assert_close(fused, one_by_one, atol=1e-5, rtol=0)
    other_order = warp(warp(x, turn[None].expand(2, 3, 3)), shift[None].expand(2, 3, 3))
    assert not torch.allclose(fused, other_order, atol=1e-3)


def test_erasing_zeroes_one_rectangle_of_the_given_area():
    aug = RandomErasing((0.1, 0.4), (0.3, 1 / 0.3), p=1.0)
    out = aug(torch.ones(300, 3, 40, 40), gen(0))
    erased = out[:, 0] == 0
    assert torch.equal(erased, (out == 0).all(1))  # every channel
    frac = erased.float().mean((1, 2))
    assert frac.min() > 0.08 and frac.max() < 0.42 and frac.std() > 0.05
    rows, cols = erased.any(2), erased.any(1)  # a filled rectangle: rows x cols
    assert torch.equal(erased, rows[:, :, None] & cols[:, None, :])
    tall = rows.sum(1) > cols.sum(1)
    assert 0.3 < tall.float().mean() < 0.7  # ratios below and above 1 alike


@pytest.mark.parametrize("code", ["Sh", "Et", "Ts", "Cr", "Re"])
def test_without_kornia_its_augments_name_the_extra_and_the_rest_still_build(monkeypatch, code):
    monkeypatch.setitem(sys.modules, "kornia", None)  # import kornia now fails
    monkeypatch.setitem(sys.modules, "kornia.augmentation", None)
    with pytest.raises(ConfigError, match=rf"augment {code} needs kornia.*vqclip\[augments\]"):
        build_augments([code], 32)
    own = build_augments(["Af", "Pe", "Ji", "Er", "Ro", "Gn"], 32)
    x = torch.rand(4, 3, 32, 32)
    assert own(x, torch.Generator().manual_seed(0)).shape == x.shape
