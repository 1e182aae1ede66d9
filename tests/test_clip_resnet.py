"""CLIP's ResNet image tower (RN50 and siblings): OpenAI's names, sizes and outputs."""

import dataclasses

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from vqclip.clip import CLIP, CLIPConfig, clip_config_from_state_dict, clip_preset, load_clip
from vqclip.clip.io import save_clip
from vqclip.clip.resnet import AttentionPool2d
from vqclip.errors import ConfigError

# Stem width 16: the attention pool has 16 * 32 = 512 channels and 8 heads (OpenAI's rule).
TINY_RN = CLIPConfig(
    embed_dim=16,
    image_size=64,
    vision_width=16,
    vision_layers=(1, 2, 1, 1),
    context_length=12,
    vocab_size=100,
    text_width=64,
    text_layers=1,
    quick_gelu=True,
)


def _seeded_weights(clip: CLIP) -> dict[str, torch.Tensor]:
    """Weights scaled by fan-in and BatchNorm statistics away from the identity, so that every
    part of the tower shapes the output."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for k, v in sorted(clip.state_dict().items()):
        if k.endswith("num_batches_tracked"):
            out[k] = v
            continue
        t = torch.randn(v.shape, generator=g)
        if t.ndim >= 2:
            t = t / t[0].numel() ** 0.5
        else:
            t = t * 0.1 + (1.0 if k.endswith(".weight") else 0.0)
        out[k] = t.abs() + 0.5 if k.endswith("running_var") else t
    return out


@pytest.fixture
def model() -> CLIP:
    clip = CLIP(TINY_RN).eval()
    clip.load_state_dict(_seeded_weights(clip))
    return clip


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# First 4 dims of the image embedding computed by OpenAI's ModifiedResNet (clip/model.py, run
# standalone) with the same weights and inputs, after CLIP's mean/std normalisation.
REFERENCE_SLICE = [
    [0.4176524579524994, -1.5591665506362915, -0.5451891422271729, -0.9853426814079285],
    [0.4239824712276459, -1.5623204708099365, -0.5519841909408569, -0.9819653034210205],
]


def test_image_tower_matches_openai_reference(model, images):
    with torch.no_grad():
        out = model.encode_image(images)[:, :4]
    assert torch.allclose(out, torch.tensor(REFERENCE_SLICE), atol=1e-5)


def test_rn50_preset_has_openai_names_shapes_and_parameter_count():
    with torch.device("meta"):
        clip = CLIP(clip_preset("RN50", quick_gelu=True))
    sd = clip.state_dict()
    shapes = {
        "visual.conv1.weight": (32, 3, 3, 3),
        "visual.bn3.running_var": (64,),
        "visual.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "visual.layer1.0.downsample.1.num_batches_tracked": (),
        "visual.layer3.5.conv2.weight": (256, 256, 3, 3),
        "visual.layer4.0.bn3.weight": (2048,),
        "visual.attnpool.positional_embedding": (50, 2048),
        "visual.attnpool.q_proj.weight": (2048, 2048),
        "visual.attnpool.c_proj.weight": (1024, 2048),
        "text_projection": (512, 1024),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert "visual.layer3.6.conv1.weight" not in sd and "visual.proj" not in sd
    assert sum(1 for k in sd if k.startswith("visual.layer") and k.endswith("conv1.weight")) == 16
    # The published RN50 CLIP parameter count, logit_scale included.
    assert sum(p.numel() for p in clip.parameters()) == 102_007_137
    assert clip.config.vision_heads == 32
    assert clip_config_from_state_dict(sd, quick_gelu=True) == clip.config


@pytest.mark.parametrize("name", ["RN101", "RN50x4", "RN50x16", "RN50x64"])
def test_resnet_presets_are_read_back_from_their_own_state_dicts(name):
    with torch.device("meta"):
        clip = CLIP(clip_preset(name, quick_gelu=True))
    assert clip_config_from_state_dict(clip.state_dict(), quick_gelu=True) == clip.config


def test_save_load_roundtrip_and_openai_style_file(model, images, tmp_path):
    save_clip(model, tmp_path / "rn.safetensors")
    loaded = load_clip(tmp_path / "rn.safetensors")
    assert loaded.config == TINY_RN
    # OpenAI's state dicts: no JSON, extra integer entries; exports may drop BatchNorm counters.
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({**sd, "input_resolution": 64}, tmp_path / "RN.bin")
    inferred = load_clip(tmp_path / "RN.bin")
    assert inferred.config == TINY_RN
    with torch.no_grad():
        want = model.encode_image(images)
        # Not bit for bit: oneDNN may pick another convolution kernel for frozen weights.
        assert torch.allclose(loaded.encode_image(images), want, atol=1e-6)
        assert torch.allclose(inferred.encode_image(images), want, atol=1e-6)


def test_a_shape_mismatch_names_the_key(model, tmp_path):
    sd = dict(model.state_dict())
    sd["visual.layer2.1.conv2.weight"] = torch.zeros(1, 1, 3, 3)
    safetensors.torch.save_file(sd, tmp_path / "w.safetensors")
    with pytest.raises(Exception, match=r"visual\.layer2\.1\.conv2\.weight"):
        load_clip(tmp_path / "w.safetensors", TINY_RN)


def test_attention_pool_matches_torch_multi_head_attention():
    torch.manual_seed(0)
    pool = AttentionPool2d(grid=2, width=32, heads=4, output_dim=8)
    x = torch.randn(3, 32, 2, 2)
    seq = torch.cat([x.flatten(2).mean(2, keepdim=True), x.flatten(2)], 2).permute(2, 0, 1)
    seq = seq + pool.positional_embedding[:, None]
    want, _ = F.multi_head_attention_forward(
        seq, seq, seq, 32, 4, None,
        torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        None, None, False, 0.0, pool.c_proj.weight, pool.c_proj.bias,
        training=False, need_weights=False, use_separate_proj_weight=True,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
    )  # fmt: skip
    assert torch.allclose(pool(x), want[0], atol=1e-6)


def test_gradient_reaches_the_image_and_bf16_autocast_runs(model, images):
    images = images.clone().requires_grad_(True)
    model.encode_image(images).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.encode_image(images).float()
        full = model.encode_image(images.float())
    assert F.cosine_similarity(low, full.float()).min() > 0.98


def test_config_json_roundtrip_keeps_the_block_counts():
    d = TINY_RN.to_dict()
    assert d["vision_layers"] == [1, 2, 1, 1] and d["patch_size"] is None
    assert CLIPConfig.from_dict(d) == TINY_RN and CLIPConfig.from_dict(d).is_resnet


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"patch_size": 8}, "patch_size must be None"),
        ({"image_size": 48}, "multiple of 32"),
        ({"vision_layers": (1, 2, 1)}, "four positive block counts"),
        ({"vision_layers": (1, 0, 1, 1)}, "four positive block counts"),
        ({"vision_width": 15}, "even"),
    ],
)
def test_resnet_config_errors_name_the_problem(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TINY_RN, **change)


def test_vit_config_still_needs_a_patch_size():
    with pytest.raises(ConfigError, match="patch_size must be a positive integer"):
        CLIPConfig(
            embed_dim=16, image_size=32, vision_width=64, vision_layers=2, text_width=64,
            text_layers=1, quick_gelu=True,
        )  # fmt: skip
