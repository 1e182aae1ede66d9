import json
import math

import pytest
import torch

from vqclip.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vqclip.vqgan import VQGAN, VQGANConfig, load_vqgan, save_taming, save_vqgan
from vqclip.vqgan.modules import AttnBlock, Downsample

# taming's published model YAMLs (configs/model.yaml of each release); the Gumbel one's
# lossconfig, which only training reads, is cut down to its target.
IMAGENET_F16_16384_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 256
    n_embed: 16384
    monitor: val/rec_loss
    ddconfig:
      double_z: false
      z_channels: 256
      resolution: 256
      in_channels: 3
      out_ch: 3
      ch: 128
      ch_mult:
      - 1
      - 1
      - 2
      - 2
      - 4
      num_res_blocks: 2
      attn_resolutions:
      - 16
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: false
        disc_in_channels: 3
        disc_start: 0
        disc_weight: 0.75
        disc_num_layers: 2
        codebook_weight: 1.0
"""

GUMBEL_F8_8192_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.GumbelVQ
  params:
    kl_weight: 1.0e-08
    embed_dim: 256
    n_embed: 8192
    monitor: val/rec_loss
    temperature_scheduler_config:
      target: taming.lr_scheduler.LambdaWarmUpCosineScheduler
      params:
        warm_up_steps: 0
        max_decay_steps: 1000001
        lr_start: 0.9
        lr_max: 0.9
        lr_min: 1.0e-06
    ddconfig:
      double_z: false
      z_channels: 256
      resolution: 256
      in_channels: 3
      out_ch: 3
      ch: 128
      ch_mult:
      - 1
      - 1
      - 2
      - 4
      num_res_blocks: 2
      attn_resolutions:
      - 32
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.DummyLoss
"""

# Shape of taming's configs/sflckr_transformer.yaml (the S-FLCKR release; COCO and FacesHQ
# are alike): the VQGAN is the transformer's first stage.
TRANSFORMER_YAML = """\
model:
  target: taming.models.cond_transformer.Net2NetTransformer
  params:
    transformer_config:
      target: taming.modules.transformer.mingpt.GPT
      params: {vocab_size: 16, block_size: 8, n_layer: 1, n_head: 1, n_embd: 8}
    first_stage_config:
      target: taming.models.vqgan.VQModel
      params:
        ckpt_path: checkpoints/first_stage_model.ckpt
        embed_dim: 4
        n_embed: 16
        ddconfig: {double_z: false, z_channels: 8, resolution: 32, in_channels: 3, out_ch: 3,
                   ch: 32, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [16],
                   dropout: 0.0}
        lossconfig: {target: taming.modules.losses.DummyLoss}
    cond_stage_config: __is_unconditional__
"""


def random_model(config: VQGANConfig, seed: int = 0) -> VQGAN:
    torch.manual_seed(seed)
    model = VQGAN(config).eval()
    # Spread the codebook out so quantisation picks varied codes.
    with torch.no_grad():
        model.codebook.normal_()
    return model


def images(h: int = 32, w: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ch", 48),
        ("ch", 0),
        ("ch_mult", ()),
        ("ch_mult", (1, 0)),
        ("num_res_blocks", True),
        ("dropout", 1.5),
        ("double_z", True),
        ("n_embed", 0),
        ("quantizer", "ema"),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(tiny_vqgan_config, field, value):
    fields = {**tiny_vqgan_config.to_dict(), field: value}
    with pytest.raises(ConfigError) as err:
        VQGANConfig(**fields)
    assert field in str(err.value) and repr(value).strip("()") in str(err.value)


def test_config_round_trips_through_dict_and_json(tiny_gumbel_config):
    data = json.loads(json.dumps(tiny_gumbel_config.to_dict()))
    again = VQGANConfig.from_dict(data)
    assert again == tiny_gumbel_config and isinstance(again.ch_mult, tuple)
    with pytest.raises(ConfigError, match="heads"):
        VQGANConfig.from_dict({**data, "heads": 2})
    del data["n_embed"]
    with pytest.raises(ConfigError, match="n_embed"):
        VQGANConfig.from_dict(data)


def test_imagenet_f16_yaml_gives_the_real_model(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(IMAGENET_F16_16384_YAML)
    config = VQGANConfig.from_taming_yaml(path)
    assert config == VQGANConfig(
        ch=128, out_ch=3, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
        dropout=0.0, in_channels=3, resolution=256, z_channels=256, double_z=False,
        embed_dim=256, n_embed=16384, quantizer="vq",
    )  # fmt: skip
    assert config.downsample_factor == 16
    with torch.device("meta"):
        sd = VQGAN(config).state_dict()
    # 144 encoder + 194 decoder tensors + quant_conv, post_quant_conv (2 each) + codebook.
    assert len(sd) == 343
    expected = {
        "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.down.3.downsample.conv.weight": (256, 256, 3, 3),
        "encoder.down.4.attn.1.proj_out.weight": (512, 512, 1, 1),
        "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "encoder.conv_out.weight": (256, 512, 3, 3),
        "decoder.conv_in.weight": (512, 256, 3, 3),
        "decoder.up.4.attn.2.k.weight": (512, 512, 1, 1),
        "decoder.up.4.upsample.conv.weight": (512, 512, 3, 3),
        "decoder.up.3.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "decoder.up.0.block.2.norm2.bias": (128,),
        "decoder.conv_out.weight": (3, 128, 3, 3),
        "quant_conv.weight": (256, 256, 1, 1),
        "post_quant_conv.weight": (256, 256, 1, 1),
        "quantize.embedding.weight": (16384, 256),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    # attention only at resolution 16, resampling only between levels, no temb layers
    assert not any(k.startswith(("encoder.down.3.attn", "decoder.up.3.attn")) for k in sd)
    assert "encoder.down.4.downsample.conv.weight" not in sd
    assert "decoder.up.0.upsample.conv.weight" not in sd
    assert not any("temb" in k or k.startswith("loss.") for k in sd)


def test_gumbel_f8_yaml_gives_the_real_model():
    import yaml

    config = VQGANConfig.from_taming_yaml(yaml.safe_load(GUMBEL_F8_8192_YAML))
    assert (config.quantizer, config.n_embed, config.embed_dim) == ("gumbel", 8192, 256)
    assert (config.ch_mult, config.attn_resolutions, config.downsample_factor) == (
        (1, 1, 2, 4),
        (32,),
        8,
    )
    with torch.device("meta"):
        sd = VQGAN(config).state_dict()
    quantizer = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("quant")}
    assert quantizer == {
        "quant_conv.weight": (256, 256, 1, 1),
        "quant_conv.bias": (256,),
        "quantize.proj.weight": (8192, 256, 1, 1),
        "quantize.proj.bias": (8192,),
        "quantize.embed.weight": (8192, 256),
    }
    assert "encoder.down.3.attn.0.norm.weight" in sd  # 256 / 2**3 = 32
    assert "decoder.up.3.attn.2.v.weight" in sd


def test_transformer_yaml_gives_its_first_stage(tiny_vqgan_config):
    import yaml

    assert VQGANConfig.from_taming_yaml(yaml.safe_load(TRANSFORMER_YAML)) == tiny_vqgan_config


@pytest.mark.parametrize(
    "target", ["ldm.models.autoencoder.AutoencoderKL", "taming.models.vqgan.VQSegmentationModel"]
)
def test_yaml_with_another_model_is_refused_naming_it(target):
    data = {"model": {"target": target, "params": {}}}
    with pytest.raises(ConfigError, match=target.replace(".", r"\.")):
        VQGANConfig.from_taming_yaml(data)


# model


def test_latent_grid_for_non_square_input(tiny_vqgan_config):
    config = VQGANConfig(**{**tiny_vqgan_config.to_dict(), "ch_mult": (1, 1, 2)})
    model = random_model(config)
    assert model.downsample_factor == 4
    x = images(32, 48)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (2, config.embed_dim, 8, 12)
        z_q, idx = model.quantize(z)
        assert idx.shape == (2, 8, 12) and idx.dtype == torch.int64
        assert model.decode(z_q).shape == (2, 3, 32, 48)


@pytest.mark.parametrize("kind", ["vq", "gumbel"])
def test_quantize_picks_the_true_nearest_code(tiny_vqgan_config, kind):
    config = VQGANConfig(**{**tiny_vqgan_config.to_dict(), "quantizer": kind, "n_embed": 64})
    model = random_model(config)
    z = torch.randn(3, config.embed_dim, 5, 7)
    z_q, idx = model.quantize(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, config.embed_dim)
    brute = torch.cdist(flat, model.codebook).argmin(1).reshape(3, 5, 7)
    assert torch.equal(idx, brute)
    assert len(idx.unique()) > 10
    expected = model.codebook[idx].permute(0, 3, 1, 2)
    torch.testing.assert_close(z_q, expected, rtol=0, atol=1e-6)
    weight = model.quantize.embed.weight if kind == "gumbel" else model.quantize.embedding.weight
    assert model.codebook is weight


def test_quantize_is_straight_through(tiny_vqgan):
    z = torch.randn(1, 4, 6, 6, requires_grad=True)
    z_q, _ = tiny_vqgan.quantize(z)
    z_q.retain_grad()
    tiny_vqgan.decode(z_q).square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    torch.testing.assert_close(z.grad, z_q.grad, rtol=0, atol=0)


def test_half_precision_latents_quantize_like_fp32(tiny_vqgan):
    z = torch.randn(1, 4, 8, 8)
    z_q, idx = tiny_vqgan.quantize(z.bfloat16())
    assert z_q.dtype == torch.bfloat16
    assert torch.equal(idx, tiny_vqgan.quantize(z.bfloat16().float())[1])


def test_wrong_channel_count_is_a_clear_error(tiny_vqgan):
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        tiny_vqgan.encode(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ConfigError, match=r"\(B, 4, H, W\)"):
        tiny_vqgan.decode(torch.zeros(1, 8, 4, 4))


def test_attention_matches_taming_formula():
    torch.manual_seed(0)
    block = AttnBlock(32)
    x = torch.randn(2, 32, 3, 5)
    h = block.norm(x)
    q, k, v = (m(h).reshape(2, 32, 15) for m in (block.q, block.k, block.v))
    w = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) / math.sqrt(32), dim=2)  # (B, HW, HW)
    out = torch.bmm(v, w.permute(0, 2, 1)).reshape(2, 32, 3, 5)
    torch.testing.assert_close(block(x), x + block.proj_out(out), rtol=1e-5, atol=1e-5)


def test_downsample_pads_only_right_and_bottom():
    torch.manual_seed(0)
    down = Downsample(4)
    x = torch.randn(1, 4, 8, 6)
    out = down(x)
    assert out.shape == (1, 4, 4, 3)
    # Without left/top padding, output (i, j) sees input rows 2i..2i+2, cols 2j..2j+2.
    unpadded = torch.nn.functional.conv2d(x, down.conv.weight, down.conv.bias, stride=2)
    torch.testing.assert_close(out[..., :3, :2], unpadded)


# checkpoints


@pytest.mark.parametrize("kind", ["vq", "gumbel"])
def test_taming_and_safetensors_round_trips_give_identical_outputs(
    tmp_path, tiny_vqgan_config, kind
):
    config = VQGANConfig(**{**tiny_vqgan_config.to_dict(), "quantizer": kind})
    model = random_model(config)
    x = images()
    with torch.no_grad():
        expected = model(x)

    save_taming(model, tmp_path / "last.ckpt", tmp_path / "model.yaml")
    loaded = load_vqgan(tmp_path / "last.ckpt", tmp_path / "model.yaml")
    assert loaded.config == config and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)

    save_vqgan(loaded, tmp_path / "vqgan.safetensors")
    meta = json.loads((tmp_path / "vqgan.json").read_text())
    assert (meta["format"], meta["version"], meta["config"]) == (
        "vqclip-vqgan",
        1,
        config.to_dict(),
    )
    fast = load_vqgan(tmp_path / "vqgan.safetensors")
    torch.testing.assert_close(fast(x), expected, rtol=0, atol=0)


def test_loss_weights_are_dropped_and_lightning_extras_ignored(tmp_path, tiny_vqgan_config):
    import argparse

    model = random_model(tiny_vqgan_config)
    sd = dict(model.state_dict())
    sd["loss.discriminator.main.0.weight"] = torch.zeros(64, 3, 4, 4)
    sd["loss.perceptual_loss.net.slice1.0.weight"] = torch.zeros(64, 3, 3, 3)
    ckpt = {
        "epoch": 3,
        "state_dict": sd,
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(2)}}}],
        "hyper_parameters": argparse.Namespace(lr=1e-4),  # not weights-only loadable
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    loaded = load_vqgan(tmp_path / "last.ckpt", tiny_vqgan_config)
    assert not any(k.startswith("loss.") for k in loaded.state_dict())
    torch.testing.assert_close(loaded.codebook, model.codebook)


def test_transformer_checkpoint_loads_its_first_stage(tmp_path, tiny_vqgan_config):
    model = random_model(tiny_vqgan_config)
    sd = {f"first_stage_model.{k}": v for k, v in model.state_dict().items()}
    sd["transformer.tok_emb.weight"] = torch.zeros(16, 8)
    sd["cond_stage_model.encoder.conv_in.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save({"state_dict": sd}, tmp_path / "last.ckpt")
    (tmp_path / "model.yaml").write_text(TRANSFORMER_YAML)
    loaded = load_vqgan(tmp_path / "last.ckpt", tmp_path / "model.yaml")
    torch.testing.assert_close(loaded.decoder.conv_out.weight, model.decoder.conv_out.weight)


def test_bare_state_dict_loads(tmp_path, tiny_vqgan_config):
    model = random_model(tiny_vqgan_config)
    torch.save(model.state_dict(), tmp_path / "vqgan.pth")
    loaded = load_vqgan(tmp_path / "vqgan.pth", tiny_vqgan_config)
    torch.testing.assert_close(loaded.codebook, model.codebook)


@pytest.mark.parametrize("defect", ["missing", "renamed", "shape"])
def test_mismatched_state_dict_is_refused_listing_the_key(tmp_path, tiny_vqgan_config, defect):
    sd = dict(random_model(tiny_vqgan_config).state_dict())
    key = "decoder.up.1.attn.0.q.weight"
    if defect == "missing":
        del sd[key]
    elif defect == "renamed":
        sd["decoder.up.1.attn.0.query.weight"] = sd.pop(key)
    else:
        sd[key] = torch.zeros(64, 64, 3, 3)
    torch.save({"state_dict": sd}, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError) as err:
        load_vqgan(tmp_path / "bad.ckpt", tiny_vqgan_config)
    assert "bad.ckpt" in str(err.value) and key in str(err.value)


def test_config_of_another_size_is_refused(tmp_path, tiny_vqgan_config):
    save_taming(random_model(tiny_vqgan_config), tmp_path / "a.ckpt", tmp_path / "a.yaml")
    other = VQGANConfig(**{**tiny_vqgan_config.to_dict(), "n_embed": 32})
    with pytest.raises(CheckpointError, match=r"quantize\.embedding\.weight"):
        load_vqgan(tmp_path / "a.ckpt", other)


def test_missing_and_unreadable_files_are_clear_errors(tmp_path, tiny_vqgan_config):
    with pytest.raises(WeightsNotFoundError, match=r"nothere\.ckpt"):
        load_vqgan(tmp_path / "nothere.ckpt", tiny_vqgan_config)
    save_taming(random_model(tiny_vqgan_config), tmp_path / "a.ckpt", tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="YAML"):
        load_vqgan(tmp_path / "a.ckpt")
    with pytest.raises(WeightsNotFoundError, match=r"nothere\.yaml"):
        load_vqgan(tmp_path / "a.ckpt", tmp_path / "nothere.yaml")

    (tmp_path / "junk.ckpt").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"junk\.ckpt"):
        load_vqgan(tmp_path / "junk.ckpt", tiny_vqgan_config)

    save_vqgan(random_model(tiny_vqgan_config), tmp_path / "v.safetensors")
    (tmp_path / "v.json").unlink()
    with pytest.raises(WeightsNotFoundError, match=r"v\.json"):
        load_vqgan(tmp_path / "v.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        load_vqgan(tmp_path / "junk.safetensors", tiny_vqgan_config)
    with pytest.raises(CheckpointError, match=r"\.onnx"):
        load_vqgan(tmp_path / "model.onnx", tiny_vqgan_config)
