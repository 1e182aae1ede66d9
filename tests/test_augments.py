import kornia.augmentation as K
import pytest
import torch
from torch import nn

from vqclip.augments import (
    AUGMENTS,
    DEFAULT_AUGMENTS,
    ColourJitter,
    build_augments,
    check_augment_codes,
)
from vqclip.errors import ConfigError

# code -> kornia class and the per-cutout probability of method.md step 5
EXPECTED = {
    "Ji": (ColourJitter, 0.7),
    "Sh": (K.RandomSharpness, 0.5),
    "Gn": (K.RandomGaussianNoise, 0.5),
    "Pe": (K.RandomPerspective, 0.7),
    "Ro": (K.RandomRotation, 0.7),
    "Af": (K.RandomAffine, 0.7),
    "Et": (K.RandomElasticTransform, 0.7),
    "Ts": (K.RandomThinPlateSpline, 0.7),
    "Cr": (K.RandomCrop, 0.5),
    "Er": (K.RandomErasing, 0.7),
    "Re": (K.RandomResizedCrop, 0.5),
}


def test_every_code_maps_to_its_kornia_class_and_probability():
    assert set(AUGMENTS) == set(EXPECTED)
    for code, (cls, p) in EXPECTED.items():
        (aug,) = build_augments([code], cut_size=32)
        assert isinstance(aug, cls), code
        assert aug.p == p, code
        if code != "Ji":  # kornia's: per cutout, never all-or-nothing
            assert aug.p_batch == 1.0, code


def test_codes_apply_in_the_given_order():
    augs = build_augments(["Pe", "Af", "Ji"], cut_size=32)
    assert [type(a) for a in augs] == [K.RandomPerspective, K.RandomAffine, ColourJitter]
    assert DEFAULT_AUGMENTS == ("Af", "Pe", "Ji", "Er")


@pytest.mark.parametrize("code", sorted(AUGMENTS))
def test_gradient_flows_through_each_augmentation(code):
    torch.manual_seed(0)
    (aug,) = build_augments([code], cut_size=32)
    aug.p = 1.0  # force it on every cutout so the transform, not the identity, is tested
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = aug(x)
    assert y.shape == x.shape
    assert not torch.allclose(y, x), "augmentation did nothing"
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("code", ["Cr", "Re"])
def test_crop_augments_gate_each_cutout(code):
    # kornia's own crops apply to all or none of a batch; ours pick cutouts independently.
    torch.manual_seed(0)
    (aug,) = build_augments([code], cut_size=16)
    x = torch.rand(64, 3, 16, 16)
    changed = [not torch.equal(a, b) for a, b in zip(aug(x), x, strict=True)]
    assert 10 < sum(changed) < 54


def test_empty_list_is_identity():
    augs = build_augments([], cut_size=32)
    assert isinstance(augs, nn.Identity)
    x = torch.rand(2, 3, 8, 8)
    assert augs(x) is x


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
    torch.manual_seed(0)
    bright = ColourJitter(0.1, 0.0, 0.0, 0.0, p=1.0)(x)
    ratio = (bright / x).flatten(1)  # one brightness factor per image, within its range
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)
    assert ratio.min() >= 0.9 - 1e-5 and ratio.max() <= 1.1 + 1e-5 and ratio.std() > 0.01
    hue = ColourJitter(0.0, 0.0, 0.0, 0.5, p=1.0)(x)  # a hue turn keeps luma, changes colour
    assert torch.allclose(_luma(hue), _luma(x), atol=1e-4) and not torch.allclose(hue, x)
    grey = ColourJitter(0.0, 0.0, 1.0, 0.0, p=1.0)(x)  # saturation in [0, 2]: luma kept
    assert torch.allclose(_luma(grey), _luma(x), atol=1e-4)
    contrast = ColourJitter(0.0, 0.5, 0.0, 0.0, p=1.0)(x)  # contrast keeps the mean luma
    assert torch.allclose(_luma(contrast).mean((1, 2)), _luma(x).mean((1, 2)), atol=1e-4)
    assert torch.equal(ColourJitter(0.5, 0.5, 0.5, 0.5, p=0.0)(x), x)


def test_colour_jitter_gates_each_image_and_follows_the_seed():
    x = 0.3 + 0.4 * torch.rand(400, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    a = ColourJitter(0.1, 0.1, 0.1, 0.1, p=0.7)(x)
    torch.manual_seed(3)
    assert torch.equal(a, ColourJitter(0.1, 0.1, 0.1, 0.1, p=0.7)(x))
    changed = (a - x).flatten(1).abs().amax(1) > 1e-6
    assert 0.6 < changed.float().mean() < 0.8
