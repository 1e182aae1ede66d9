import dataclasses
import re
import zipfile

import pytest
import safetensors.torch
import torch
from torch import nn

from vqclip.clip import (
    CLIP,
    CLIP_PRESETS,
    CLIPConfig,
    clip_config_from_state_dict,
    clip_preset,
    load_clip,
    save_clip,
    tokenize,
)
from vqclip.clip.model import QuickGELU, SelfAttention, fold_quick_gelu
from vqclip.errors import CheckpointError, ConfigError, WeightsNotFoundError

# Heads are width // 64 (2 and 1) so that a config inferred from the weights equals this one.
TINY = CLIPConfig(
    embed_dim=16,
    image_size=32,
    patch_size=8,
    vision_width=128,
    vision_layers=2,
    context_length=12,
    vocab_size=100,
    text_width=64,
    text_layers=2,
    quick_gelu=True,
)
EOT = TINY.vocab_size - 1  # the end token has the largest id, as in CLIP's vocabulary


@pytest.fixture
def model() -> CLIP:
    torch.manual_seed(0)
    return CLIP(TINY).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def tokens() -> torch.Tensor:
    t = torch.zeros(2, TINY.context_length, dtype=torch.long)
    t[0, :5] = torch.tensor([98, 10, 11, 12, EOT])
    t[1, :3] = torch.tensor([98, 40, EOT])
    return t


def test_save_load_roundtrip_gives_same_outputs(model, images, tokens, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_clip(model, path)
    assert (tmp_path / "tiny.json").is_file()
    loaded = load_clip(path)
    assert loaded.config == TINY
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())


def test_folding_quick_gelu_keeps_the_function_and_the_checkpoint_values(
    model, images, tokens, tmp_path
):
    """fold_quick_gelu moves the 1.702 into the linear layers (a plain silu between them):
    the outputs, the state dict a save writes and a load into the folded model all stay the
    checkpoint's, to rounding."""
    with torch.no_grad():
        before = model.encode_image(images), model.encode_text(tokens)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    assert fold_quick_gelu(model) == TINY.vision_layers + TINY.text_layers
    assert fold_quick_gelu(model) == 0  # once: a model shared by runs is folded one time
    assert not any(isinstance(m, QuickGELU) for m in model.modules())
    assert model.visual.transformer.resblocks[0].mlp.c_fc.weight.abs().sum() > (
        1.5 * raw["visual.transformer.resblocks.0.mlp.c_fc.weight"].abs().sum()
    )  # folded in the parameters themselves
    with torch.no_grad():
        after = model.encode_image(images), model.encode_text(tokens)
    for a, b in zip(after, before, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    saved = model.state_dict()
    assert saved.keys() == raw.keys()
    for key, value in raw.items():
        assert torch.allclose(saved[key], value, atol=1e-6, rtol=1e-6), key
    save_clip(model, tmp_path / "folded.safetensors")
    with torch.no_grad():
        reloaded = load_clip(tmp_path / "folded.safetensors").encode_image(images)
        model.load_state_dict(raw)  # the checkpoint's values into the folded model
        again = model.encode_image(images)
    assert torch.allclose(reloaded, before[0], atol=1e-5, rtol=1e-5)
    assert torch.allclose(again, after[0], atol=1e-6, rtol=1e-6)


def test_sidecar_config_keeps_activation(tmp_path):
    """Without the saved JSON, inference would pick QuickGELU; the sidecar must win."""
    gelu_model = CLIP(dataclasses.replace(TINY, quick_gelu=False))
    save_clip(gelu_model, tmp_path / "m.safetensors")
    assert load_clip(tmp_path / "m.safetensors").config.quick_gelu is False
    assert load_clip(tmp_path / "m.safetensors", quick_gelu=True).config.quick_gelu is True


def test_state_dict_infers_config_and_loads_strictly(model, images, tmp_path):
    sd = model.state_dict()
    assert clip_config_from_state_dict(sd, quick_gelu=True) == TINY
    # OpenAI's files carry three integer entries that are not parameters.
    torch.save(
        {**sd, "input_resolution": 32, "context_length": 12, "vocab_size": 100},
        tmp_path / "open_clip_pytorch_model.bin",
    )
    loaded = load_clip(tmp_path / "open_clip_pytorch_model.bin")
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))


def test_config_argument_accepts_dict_and_sizes_only(model, tmp_path):
    safetensors.torch.save_file(model.state_dict(), tmp_path / "w.safetensors")
    loaded = load_clip(tmp_path / "w.safetensors", TINY.to_dict(), quick_gelu=False)
    assert loaded.config == dataclasses.replace(TINY, quick_gelu=False)
    sizes = {k: v for k, v in TINY.to_dict().items() if k != "quick_gelu"}  # like CLIP_PRESETS
    assert load_clip(tmp_path / "w.safetensors", sizes, quick_gelu=True).config == TINY
    with pytest.raises(ConfigError, match="quick_gelu"):
        load_clip(tmp_path / "w.safetensors", sizes)


# First 4 dims of encode_image / encode_text computed by OpenCLIP 3.3.0's CLIP (the reference
# implementation) with the same seeded weights, inputs and tokens; pasted here once.
REFERENCE_SLICES = {
    True: (
        [[-0.04302585, 0.10085238, -0.06994708, -0.14228083],
         [-0.04541662, 0.10652645, -0.06659272, -0.13717781]],
        [[-0.04047414, 0.00170613, -0.04868669, 0.09563211],
         [-0.01611150, -0.00353062, -0.07587239, 0.10325728]],
    ),
    False: (
        [[-0.04279923, 0.10158297, -0.07098501, -0.14315554],
         [-0.04526144, 0.10727420, -0.06761615, -0.13800445]],
        [[-0.04012572, 0.00095654, -0.04817627, 0.09477627],
         [-0.01571955, -0.00411432, -0.07546704, 0.10256708]],
    ),
}  # fmt: skip


@pytest.mark.parametrize("quick_gelu", [True, False])
def test_outputs_match_reference_implementation(quick_gelu, images, tokens):
    clip = CLIP(dataclasses.replace(TINY, quick_gelu=quick_gelu)).eval()
    g = torch.Generator().manual_seed(0)
    sd = clip.state_dict()
    clip.load_state_dict({k: torch.randn(sd[k].shape, generator=g) * 0.1 for k in sorted(sd)})
    image_ref, text_ref = REFERENCE_SLICES[quick_gelu]
    with torch.no_grad():
        image_out = clip.encode_image(images)[:, :4]
        text_out = clip.encode_text(tokens)[:, :4]
    assert torch.allclose(image_out, torch.tensor(image_ref), atol=1e-5)
    assert torch.allclose(text_out, torch.tensor(text_ref), atol=1e-5)


def test_quick_gelu_and_gelu_differ(model, images):
    gelu = CLIP(dataclasses.replace(TINY, quick_gelu=False)).eval()
    gelu.load_state_dict(model.state_dict())
    with torch.no_grad():
        a, b = model.encode_image(images), gelu.encode_image(images)
    assert not torch.allclose(a, b, atol=1e-4)


def test_vit_b32_preset_has_openai_keys_and_parameter_count():
    with torch.device("meta"):
        clip = CLIP(clip_preset("ViT-B-32", quick_gelu=True))
    sd = clip.state_dict()
    block = [
        "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias",
        "attn.out_proj.weight", "attn.out_proj.bias", "ln_2.weight", "ln_2.bias",
        "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
    ]  # fmt: skip
    expected = {
        "visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding",
        "visual.ln_pre.weight", "visual.ln_pre.bias", "visual.ln_post.weight",
        "visual.ln_post.bias", "visual.proj", "token_embedding.weight", "positional_embedding",
        "ln_final.weight", "ln_final.bias", "text_projection", "logit_scale",
    }  # fmt: skip
    for i in range(12):
        expected |= {f"visual.transformer.resblocks.{i}.{k}" for k in block}
        expected |= {f"transformer.resblocks.{i}.{k}" for k in block}
    assert set(sd) == expected and len(sd) == 302
    # OpenAI's published parameter count for ViT-B/32, logit_scale included.
    assert sum(p.numel() for p in clip.parameters()) == 151_277_313
    shapes = {
        "visual.conv1.weight": (768, 3, 32, 32),
        "visual.positional_embedding": (50, 768),
        "visual.proj": (768, 512),
        "token_embedding.weight": (49408, 512),
        "positional_embedding": (77, 512),
        "text_projection": (512, 512),
        "logit_scale": (),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert clip_config_from_state_dict(sd, quick_gelu=True) == clip.config


def test_presets_cover_the_published_vits():
    assert {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"} <= set(CLIP_PRESETS)
    large = clip_preset("ViT-L-14-336", quick_gelu=False)
    assert (large.grid_size, large.vision_heads, large.text_heads) == (24, 16, 12)
    with pytest.raises(ConfigError, match="ViT-H-14"):
        clip_preset("ViT-H-14", quick_gelu=True)


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_mismatched_keys_raise_checkpoint_error(model, tmp_path, change):
    sd = dict(model.state_dict())
    key = "visual.transformer.resblocks.0.mlp.c_fc.bias"
    if change == "extra":
        key = "visual.attnpool.k_proj.weight"
        sd[key] = torch.zeros(1)
    else:
        del sd[key]
    safetensors.torch.save_file(sd, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=re.escape(key)):
        load_clip(tmp_path / "w.safetensors", TINY)


def test_torchscript_archive_is_refused_without_running_it(tmp_path, monkeypatch):
    path = tmp_path / "ViT-B-32.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ViT-B-32/code/__torch__/model.py", "raise SystemExit('ran code')")
        zf.writestr("ViT-B-32/constants.pkl", b"")
        zf.writestr("ViT-B-32/data.pkl", b"")

    def forbidden(*args, **kwargs):
        raise AssertionError("TorchScript archive was opened with torch")

    monkeypatch.setattr(torch.jit, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(CheckpointError, match="TorchScript") as err:
        load_clip(path)
    assert "open_clip_model.safetensors" in str(err.value)


def test_unreadable_files_raise_clear_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError):
        load_clip(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        load_clip(tmp_path / "junk.safetensors")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_clip(tmp_path / "list.pt")


def test_gradient_reaches_the_image(model, images):
    images = images.clone().requires_grad_(True)
    model.encode_image(images).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_encode_image_normalises_with_clip_statistics(model, images):
    mean = torch.tensor(TINY.mean).view(1, 3, 1, 1)
    std = torch.tensor(TINY.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), model.visual((images - mean) / std))
    assert model.input_size == 32 and model.mean == TINY.mean and model.std == TINY.std
    assert "pixel_mean" not in model.state_dict()


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (3, 32, 32), (1, 1, 32, 32), (1, 3, 32, 40)])
def test_encode_image_wrong_shape_raises_config_error(model, shape):
    with pytest.raises(ConfigError, match=r"\(B, 3, 32, 32\)"):
        model.encode_image(torch.rand(shape))


def test_encode_text_rejects_bad_tokens(model, tokens):
    with pytest.raises(ConfigError, match=r"\(B, 12\)"):
        model.encode_text(tokens[:, :5])
    with pytest.raises(ConfigError, match=r"\[0, 100\)"):
        model.encode_text(tokens + 1)


def test_text_is_pooled_at_the_end_token(model, tokens):
    with torch.no_grad():
        base = model.encode_text(tokens)
        after = tokens.clone()
        after[0, 5:] = torch.arange(20, 27)  # below EOT, so the end token stays the largest id
        # The causal mask keeps later tokens from reaching the end token's position.
        assert torch.allclose(model.encode_text(after), base, atol=1e-6)
        before = tokens.clone()
        before[0, 2] = 50
        changed = model.encode_text(before)
    assert not torch.allclose(changed[0], base[0], atol=1e-4)
    assert torch.equal(changed[1], base[1])


def test_encode_text_str_matches_tokenize():
    clip = CLIP(dataclasses.replace(TINY, vocab_size=49408)).eval()
    with torch.no_grad():
        a = clip.encode_text_str(["a red apple", "a blue sky"])
        b = clip.encode_text(tokenize(["a red apple", "a blue sky"], context_length=12))
    assert a.shape == (2, 16) and torch.equal(a, b)
    assert clip.tokenize("a red apple").shape == (1, 12)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_torch_multihead_attention(causal):
    torch.manual_seed(0)
    ours = SelfAttention(64, 4, causal=causal)
    nn.init.normal_(ours.in_proj_weight, std=0.1)
    nn.init.normal_(ours.in_proj_bias, std=0.1)
    ref = nn.MultiheadAttention(64, 4, batch_first=True)
    ref.load_state_dict(ours.state_dict())  # strict: the parameter names are the same
    x = torch.randn(3, 9, 64)
    mask = torch.full((9, 9), float("-inf")).triu(1) if causal else None
    with torch.no_grad():
        expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
        assert torch.allclose(ours(x), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("field", "value"),
    [("patch_size", 0), ("image_size", 30), ("vision_heads", 3), ("quick_gelu", "yes"),
     ("mean", (0.5, 0.5)), ("context_length", 1)],
)  # fmt: skip
def test_config_validation_names_field_and_value(field, value):
    with pytest.raises(ConfigError, match=field) as err:
        dataclasses.replace(TINY, **{field: value})
    assert str(value) in str(err.value) or repr(value) in str(err.value)


def test_config_dict_roundtrip_and_unknown_field():
    assert CLIPConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ConfigError, match="colour"):
        CLIPConfig.from_dict({**TINY.to_dict(), "colour": 1})
    with pytest.raises(ConfigError, match="quick_gelu"):
        CLIPConfig.from_dict({k: v for k, v in TINY.to_dict().items() if k != "quick_gelu"})
