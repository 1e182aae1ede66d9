import pytest
import torch
import torch.nn.functional as F

from vqclip.errors import ConfigError
from vqclip.generate.cutouts import CutoutConfig, MakeCutouts, resample_crops, square_spans


def make(cut_size=32, cutn=64, **kw):
    kw.setdefault("augments", ())
    kw.setdefault("noise_fac", 0.0)
    return MakeCutouts(CutoutConfig(cut_size=cut_size, cutn=cutn, **kw))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def reference(images, box, cut_size):
    """One crop the slow, obvious way: slice, then torch's anti-aliased bicubic resize."""
    x0, y0, s = box
    crop = images[:, :, y0 : y0 + s, x0 : x0 + s]
    return F.interpolate(crop, size=(cut_size, cut_size), mode="bicubic", antialias=True)


# crop sizes and positions (the point: cutouts really vary, unlike "latest" or EleutherAI's)


def test_crowson_crops_spread_in_size_and_position():
    boxes, _, _ = make().sample_boxes(1, 256, 256, gen())
    x0, y0, size = boxes.T
    # sizes drawn from [32, 256): a wide spread, not all full-size nor all cut_size
    assert size.min() >= 32 and size.max() < 256
    assert size.min() < 32 + 0.25 * 224 and size.max() > 256 - 0.25 * 224
    assert size.float().std() > 40
    assert len(size.unique()) >= 30
    assert len(x0.unique()) >= 20 and len(y0.unique()) >= 20
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + size <= 256).all() and (y0 + size <= 256).all()


def test_crops_lie_inside_a_non_square_image():
    boxes, _, _ = make(cutn=200).sample_boxes(2, 120, 200, gen())
    x0, y0, size = boxes.T
    assert size.max() <= 120 and size.min() >= 32
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + size <= 200).all() and (y0 + size <= 120).all()
    assert x0.max() > 120  # offsets use the long side too


def test_cut_pow_above_one_makes_crops_smaller():
    sizes = {
        p: make(cutn=512, cut_pow=p).sample_boxes(1, 256, 256, gen())[0][:, 2].float().mean()
        for p in (0.5, 1.0, 3.0)
    }
    assert sizes[3.0] < sizes[1.0] - 40
    assert sizes[1.0] < sizes[0.5] - 25


def test_whole_is_the_full_image_every_time():
    cut = make(cut_size=16, cutn=8, method="whole")
    images = torch.rand(1, 3, 64, 64)
    out, boxes = cut.cut_with_boxes(images, gen())
    assert (boxes == torch.tensor([0, 0, 64])).all()
    expected = F.interpolate(images, size=(16, 16), mode="bicubic", antialias=True)
    torch.testing.assert_close(out, expected.expand(8, -1, -1, -1), atol=1e-5, rtol=0)


def test_whole_pads_a_non_square_image_to_a_square():
    images = torch.ones(1, 3, 32, 64)  # wide: black bars above and below
    out, boxes = make(cut_size=16, cutn=2, method="whole").cut_with_boxes(images, gen())
    assert boxes.tolist() == [[0, -16, 64]] * 2
    # image rows 4..11 (aspect kept), black beyond the filter's reach (2 rows) of them
    assert out[:, :, 6:10].min() > 0.99
    assert out[:, :, :2].abs().max() < 1e-6 and out[:, :, 14:].abs().max() < 1e-6


def test_overview_views_then_crops():
    cut = make(cut_size=16, cutn=8, method="overview", overview_n=4)
    images = torch.rand(2, 3, 48, 48)
    out, boxes = cut.cut_with_boxes(images, gen())
    boxes, out = boxes.view(2, 8, 3), out.view(2, 8, 3, 16, 16)
    assert (boxes[:, :4] == torch.tensor([0, 0, 48])).all()
    assert (boxes[:, 4:, 2] < 48).all()
    plain, gray, flipped, flipped_gray = out[0, :4]
    expected = F.interpolate(images[:1], size=(16, 16), mode="bicubic", antialias=True)[0]
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped, plain.flip(-1), atol=1e-6, rtol=0)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])
    torch.testing.assert_close(flipped_gray, gray.flip(-1), atol=1e-6, rtol=0)
    assert make(cutn=8, method="overview").config.n_overview == 2  # default cutn // 4


# reproducibility


def test_same_seed_same_cutouts_other_seed_other_cutouts():
    cut = MakeCutouts(CutoutConfig(cut_size=24, cutn=8))  # default augments and noise
    images = torch.rand(1, 3, 64, 64)
    a, b, c = (cut(images, gen(s)) for s in (1, 1, 2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_restoring_the_generator_state_resumes():
    cut = MakeCutouts(CutoutConfig(cut_size=24, cutn=8))
    images = torch.rand(1, 3, 64, 64)
    g = gen(3)
    cut(images, g)
    state = g.get_state()
    step2 = cut(images, g)
    g.set_state(state)
    assert torch.equal(cut(images, g), step2)


def test_global_rng_is_untouched():
    cut = MakeCutouts(CutoutConfig(cut_size=24, cutn=8))  # kornia draws from the global RNG
    images = torch.rand(1, 3, 64, 64)
    before = torch.get_rng_state()
    cut(images, gen())
    assert torch.equal(torch.get_rng_state(), before)


# resampling quality


def test_batched_resize_matches_per_crop_reference():
    images = torch.rand(2, 3, 96, 80)
    boxes = torch.tensor(
        [[0, 0, 80], [5, 9, 33], [40, 60, 20], [17, 3, 16], [1, 2, 71], [60, 70, 9]]
    )
    boxes = torch.cat([boxes[:3], boxes[3:]])  # 3 per image
    out = resample_crops(images, boxes, 16)
    for i, box in enumerate(boxes.tolist()):
        expected = reference(images[i // 3 : i // 3 + 1], box, 16)[0]
        torch.testing.assert_close(out[i], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["crowson", "whole", "overview"])
@pytest.mark.parametrize(("height", "width"), [(48, 80), (80, 48), (64, 64)])
def test_square_spans_bound_every_box_and_change_nothing(method, height, width):
    # MakeCutouts passes these bounds instead of reading them from the boxes (a GPU sync).
    cut = make(cut_size=16, cutn=40, method=method)
    boxes, hflip, _ = cut.sample_boxes(2, height, width, gen(1))
    (x_lo, x_hi), (y_lo, y_hi) = square_spans(height, width)
    assert (boxes[:, 0] >= x_lo).all() and (boxes[:, 0] + boxes[:, 2] <= x_hi).all()
    assert (boxes[:, 1] >= y_lo).all() and (boxes[:, 1] + boxes[:, 2] <= y_hi).all()
    images = torch.rand(2, 3, height, width)
    spans = square_spans(height, width)
    torch.testing.assert_close(
        resample_crops(images, boxes, 16, hflip=hflip, spans=spans),
        resample_crops(images, boxes, 16, hflip=hflip),
        atol=1e-6,
        rtol=0,
    )


def test_gradient_reaches_exactly_the_cropped_pixels():
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    resample_crops(images, torch.tensor([[10, 20, 24]]), 16).sum().backward()
    touched = images.grad.abs().sum(1)[0] > 0
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[20:44, 10:34] = True
    assert torch.equal(touched, expected)


def test_hflip_mirrors_only_the_chosen_cutouts():
    images = torch.rand(1, 3, 40, 40)
    boxes = torch.tensor([[3, 4, 30], [3, 4, 30]])
    out = resample_crops(images, boxes, 12, hflip=torch.tensor([False, True]))
    torch.testing.assert_close(out[1], out[0].flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0], reference(images, (3, 4, 30), 12)[0], atol=1e-4, rtol=0)


def test_fine_stripes_downscale_to_grey_not_moire():
    stripes = (torch.arange(256) % 2).float().expand(1, 3, 256, 256)  # period 2 px
    boxes = torch.tensor([[0, 0, 256], [3, 5, 250], [40, 17, 201], [11, 100, 150]])
    out = resample_crops(stripes, boxes, 32)
    assert (out - 0.5).abs().max() < 0.05
    # the test can see aliasing: a resize without a low-pass filter keeps the stripes
    naive = F.interpolate(stripes[..., 3:253, 5:255], size=(32, 32), mode="bilinear")
    assert (naive - 0.5).abs().max() > 0.2


# the cutout batch


def test_shape_and_grouping_by_image():
    images = torch.stack([torch.zeros(3, 64, 64), torch.ones(3, 64, 64)])
    out = make(cut_size=16, cutn=5)(images, gen())
    assert out.shape == (10, 3, 16, 16)
    assert out[:5].abs().max() < 1e-6
    assert (out[5:] - 1).abs().max() < 1e-6
    assert out.view(2, 5, 3, 16, 16)[1].min() > 0.999


def test_gradients_flow_back_to_the_image():
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    cut = MakeCutouts(CutoutConfig(cut_size=32, cutn=16))  # default augments and noise
    cut(images, gen()).square().sum().backward()
    assert torch.isfinite(images.grad).all()
    assert (images.grad != 0).float().mean() > 0.5


def test_noise_level_differs_per_cutout():
    images = torch.full((1, 3, 64, 64), 0.5)
    out = make(cut_size=16, cutn=32, noise_fac=0.1)(images, gen())
    std = (out - 0.5).flatten(1).std(1)
    assert std.max() < 0.11 and std.min() < 0.05 < std.max()
    assert len(std.unique()) == 32


# configuration errors


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"cutn": 0}, "cutn"),
        ({"cut_size": 2.5}, "cut_size"),
        ({"cut_pow": 0.0}, "cut_pow"),
        ({"noise_fac": -1.0}, "noise_fac"),
        ({"method": "latest"}, "method"),
        ({"method": "overview", "overview_n": 9}, "overview_n"),
        ({"augments": ["Af", "Zz"]}, "Zz"),
    ],
)
def test_bad_config_names_the_field(kw, field):
    args = {"cut_size": 32, "cutn": 8, **kw}
    with pytest.raises(ConfigError, match=field):
        CutoutConfig(**args)


def test_bad_image_shape_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        make()(torch.rand(3, 64, 64), gen())
