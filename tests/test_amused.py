"""aMUSEd's three parts in vqclip's own code: the U-ViT prior, the VQ model and the text condition.

Without diffusers: the real configs' names and shapes (written out from diffusers' uvit_2d.py)
load strictly at the real sizes on the meta device, with the parameter counts; stray and missing
keys are named; the loaders read a diffusers folder. With the [parity] extra (diffusers,
transformers): each part equals the reference on the same tiny random weights (diffusers' own
fast-test sizes, with and without down-sampling), and the real configs equal diffusers' key for
key on the meta device.
"""

import gzip
import json
from dataclasses import asdict, replace

import pytest
import safetensors.torch
import torch

from vqclip.clip.config import CLIPConfig
from vqclip.clip.model import CLIP
from vqclip.clip.tokenizer import VOCAB_PATH, default_tokenizer, tokenize
from vqclip.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vqclip.prior.amused import (
    AMUSED_256,
    AMUSED_512,
    AmusedPrior,
    UViT2D,
    UViT2DConfig,
    load_amused,
    micro_conditions,
)
from vqclip.prior.amused_text import (
    amused_text_condition,
    amused_tokens,
    clip_text_state_dict,
    load_text_tower,
    set_prompt,
    text_condition,
    tokenizer_pad_token,
)
from vqclip.prior.masked import MaskedResampler
from vqclip.statedict import load_strict
from vqclip.vqgan.amused_vq import (
    AMUSED_VQ_CONFIG,
    AmusedVQ,
    convert_state_dict,
    load_amused_vq,
    vq_config_from_diffusers,
    vqclip_name,
)

PARITY = "needs the [parity] extra: pip install -e '.[parity]'"
PARAMS_256 = 603_537_664
PARAMS_512 = 608_257_792

# diffusers' fast-test sizes for aMUSEd's transformer, a little wider so heads and channels differ.
TINY = UViT2DConfig(
    hidden_size=32,
    cond_embed_dim=16,
    micro_cond_encode_dim=4,
    micro_cond_embed_dim=20,
    encoder_hidden_size=24,
    vocab_size=40,
    codebook_size=32,
    in_channels=12,
    block_out_channels=16,
    num_res_blocks=2,
    block_num_heads=2,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=40,
    sample_size=4,
)
TINY_DOWN = replace(
    TINY, downsample=True, upsample=True, use_bias=True, ln_elementwise_affine=False
)
# aMUSEd's VQ model config (convert_amused.py's make_vqvae); the tiny one keeps its layout.
AMUSED_VQ = AMUSED_VQ_CONFIG
TINY_VQ = dict(
    AMUSED_VQ,
    block_out_channels=[32, 64],
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    latent_channels=4,
    layers_per_block=1,
    num_vq_embeddings=16,
    sample_size=16,
)
TEXT_CLIP = dict(
    embed_dim=24,
    image_size=32,
    patch_size=16,
    vision_width=32,
    vision_layers=1,
    text_width=32,
    text_layers=3,
    text_heads=4,
    quick_gelu=True,
)


# helper functions


def diffusers():
    return pytest.importorskip("diffusers", reason=PARITY)


def transformers():
    return pytest.importorskip("transformers", reason=PARITY)


def reference_shapes(downsample: bool) -> dict[str, tuple[int, ...]]:
    """diffusers' UVit2DModel state dict at aMUSEd's sizes, written out from uvit_2d.py and the
    blocks it builds (use_bias False: no biases anywhere)."""
    H, C, T, F, V, K, E = 1024, 768, 768, 2816, 8256, 8192, 768
    s = {
        "encoder_proj.weight": (H, T),
        "encoder_proj_layer_norm.weight": (H,),
        "embed.embeddings.weight": (V, E),
        "embed.layer_norm.weight": (E,),
        "embed.conv.weight": (C, E, 1, 1),
        "cond_embed.linear_1.weight": (H, 768 + 5 * 256),
        "cond_embed.linear_2.weight": (H, H),
        "project_to_hidden_norm.weight": (C,),
        "project_to_hidden.weight": (H, C),
        "project_from_hidden_norm.weight": (H,),
        "project_from_hidden.weight": (C, H),
        "mlm_layer.conv1.weight": (E, C, 1, 1),
        "mlm_layer.layer_norm.weight": (E,),
        "mlm_layer.conv2.weight": (K, E, 1, 1),
    }
    for block in ("down_block", "up_block"):
        for i in range(3):
            r, a = f"{block}.res_blocks.{i}.", f"{block}.attention_blocks.{i}."
            s[r + "depthwise.weight"] = (C, 1, 3, 3)
            s[r + "norm.weight"] = (C,)
            s[r + "channelwise_linear_1.weight"] = (4 * C, C)
            s[r + "channelwise_norm.gamma"] = (1, 1, 1, 4 * C)
            s[r + "channelwise_norm.beta"] = (1, 1, 1, 4 * C)
            s[r + "channelwise_linear_2.weight"] = (C, 4 * C)
            s[r + "cond_embeds_mapper.weight"] = (2 * C, H)
            s[a + "kv_mapper.weight"] = (C, H)
            for n in (1, 2):
                s[a + f"norm{n}.weight"] = (C,)
                for p in ("to_q", "to_k", "to_v", "to_out.0"):
                    s[a + f"attn{n}.{p}.weight"] = (C, C)
    if downsample:
        s["down_block.downsample.norm.weight"] = (C,)
        s["down_block.downsample.conv.weight"] = (C, C, 2, 2)
        s["up_block.upsample.norm.weight"] = (C,)
        s["up_block.upsample.conv.weight"] = (C, C, 2, 2)  # ConvTranspose2d: (in, out, k, k)
    for i in range(22):
        t = f"transformer_layers.{i}."
        for n in (1, 2, 3):
            s[t + f"norm{n}.linear.weight"] = (2 * H, H)
            s[t + f"norm{n}.norm.weight"] = (H,)
        for n in (1, 2):
            for p in ("to_q", "to_k", "to_v", "to_out.0"):
                s[t + f"attn{n}.{p}.weight"] = (H, H)
        s[t + "ff.net.0.proj.weight"] = (2 * F, H)
        s[t + "ff.net.2.weight"] = (H, F)
    return s


def meta_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}


def random_uvit(config: UViT2DConfig, seed: int = 0) -> UViT2D:
    """A UViT2D with every weight random (the norms and GRN too, not their 1 and 0 starts)."""
    torch.manual_seed(seed)
    model = UViT2D(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def uvit_inputs(config: UViT2DConfig, batch: int = 3, grid: tuple[int, int] = (4, 6)):
    """Tokens (codes and mask tokens), text states, pooled embedding, aMUSEd's micro-conditions."""
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(config.codebook_size + 1, (batch, *grid), generator=g)
    tokens[tokens == config.codebook_size] = config.vocab_size - 1
    text = torch.randn(batch, 7, config.encoder_hidden_size, generator=g)
    pooled = torch.randn(batch, config.cond_embed_dim, generator=g)
    micro = micro_conditions(256, 256).expand(batch, -1)
    return tokens, text, pooled, micro


def write_transformer(folder, model: UViT2D, *, fp16: bool = True, extra: dict | None = None):
    """A diffusers `transformer/` folder of `model`: config.json and the (fp16) safetensors."""
    folder.mkdir(parents=True)
    config = {"_class_name": "UVit2DModel", "_diffusers_version": "0.25.0.dev0"}
    (folder / "config.json").write_text(json.dumps(config | asdict(model.config)))
    sd = {k: v.half() if fp16 else v for k, v in model.state_dict().items()} | (extra or {})
    name = "diffusion_pytorch_model" + (".fp16" if fp16 else "") + ".safetensors"
    safetensors.torch.save_file(sd, folder / name)


def hf_clip_tokenizer(pad: str):
    """transformers' CLIPTokenizer over vqclip's own copy of CLIP's BPE vocabulary."""
    tr = transformers()
    tok = default_tokenizer()
    vocab = dict(tok.encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    with gzip.open(VOCAB_PATH, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1 : len(tok.ranks) + 1]
    return tr.CLIPTokenizer(vocab=vocab, merges=[tuple(x.split()) for x in lines], pad_token=pad)


# without diffusers: the real sizes, strict loading, the loaders


@pytest.mark.parametrize(
    ("config", "down", "params"), [(AMUSED_256, False, PARAMS_256), (AMUSED_512, True, PARAMS_512)]
)
def test_real_configs_load_diffusers_names_strictly(config, down, params):
    with torch.device("meta"):
        model = UViT2D(config)
    shapes = reference_shapes(down)
    load_strict(model, meta_state_dict(shapes), source="diffusion_pytorch_model.safetensors")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    total = sum(p.numel() for p in model.parameters())
    assert total == params
    assert round(total / 1e6, 1) == (603.5 if not down else 608.3)


def test_stray_and_missing_keys_are_named():
    with torch.device("meta"):
        model = UViT2D(AMUSED_256)
    sd = meta_state_dict(reference_shapes(False))
    del sd["transformer_layers.7.attn2.to_k.weight"]
    sd["transformer_layers.7.attn2.to_k.bias"] = torch.empty(1024, device="meta")
    sd["mlm_layer.conv2.weight"] = torch.empty(8256, 768, 1, 1, device="meta")
    with pytest.raises(CheckpointError) as err:
        load_strict(model, sd, source="diffusion_pytorch_model.safetensors")
    msg = str(err.value)
    assert "missing keys (1):\n    transformer_layers.7.attn2.to_k.weight" in msg
    assert "unexpected keys (1):\n    transformer_layers.7.attn2.to_k.bias" in msg
    assert "mlm_layer.conv2.weight: checkpoint (8256, 768, 1, 1) vs model (8192, 768, 1, 1)" in msg


def test_config_reads_diffusers_json_and_refuses_bad_values():
    data = {"_class_name": "UVit2DModel", "_diffusers_version": "0.25.0"} | asdict(AMUSED_512)
    assert UViT2DConfig.from_dict(data) == AMUSED_512
    assert AMUSED_256.n_micro_conds == 5
    with pytest.raises(ConfigError, match="unknown UVit2DModel settings: flash"):
        UViT2DConfig.from_dict(data | {"flash": True})
    with pytest.raises(ConfigError, match="is not UVit2DModel"):
        UViT2DConfig.from_dict(data | {"_class_name": "UNet2DModel"})
    with pytest.raises(ConfigError, match="num_attention_heads=12"):
        replace(AMUSED_256, num_attention_heads=12, hidden_size=1000)
    with pytest.raises(ConfigError, match="leaves no mask token"):
        replace(AMUSED_256, vocab_size=8192)
    with pytest.raises(ConfigError, match="downsample=1"):
        replace(AMUSED_256, downsample=1)


def test_load_amused_folder_fp16_mask_token_and_errors(tmp_path):
    model = random_uvit(TINY)
    write_transformer(tmp_path / "transformer", model)
    prior = load_amused(tmp_path / "transformer")
    assert (prior.n_codes, prior.mask_token, prior.window) == (32, 39, (4, 4))
    assert (prior.n_classes, prior.class_names) == (1, ())
    assert prior.model.encoder_proj.weight.dtype == torch.float32
    assert not prior.model.encoder_proj.weight.requires_grad
    for name, p in prior.model.state_dict().items():  # the fp16 file's values, in float32
        torch.testing.assert_close(p, model.state_dict()[name].half().float())
    scheduler = tmp_path / "scheduler"
    scheduler.mkdir()
    (scheduler / "scheduler_config.json").write_text(json.dumps({"mask_token_id": 36}))
    assert load_amused(tmp_path / "transformer").mask_token == 36
    assert load_amused(tmp_path / "transformer", mask_token=38).mask_token == 38
    with pytest.raises(ConfigError, match="mask token 31 is not among"):
        load_amused(tmp_path / "transformer", mask_token=31)

    stray = {"down_block.res_blocks.0.depthwise.bias": torch.zeros(16)}
    write_transformer(tmp_path / "bad", model, fp16=False, extra=stray)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\):\n.*depthwise\.bias"):
        load_amused(tmp_path / "bad" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(WeightsNotFoundError, match="holds none of"):
        load_amused(tmp_path)


def test_prior_logits_layout_labels_and_bad_input():
    model = random_uvit(TINY)
    prior = AmusedPrior(model, "tiny")
    tokens, text, pooled, micro = uvit_inputs(TINY, batch=2, grid=(4, 4))
    with pytest.raises(ConfigError, match="call set_text"):
        prior.logits(tokens.flatten(1), [0, 0])
    prior.set_text(text[:1], pooled[:1], micro[:1])
    prior.set_unconditional(text[1:], pooled[1:])  # the default micro-conditions: the window's
    torch.testing.assert_close(prior.default_micro(), micro_conditions(64, 64))
    out = prior.logits(tokens.flatten(1), [0, None])
    assert out.shape == (2, 16, 32) and out.dtype == torch.float32
    with torch.no_grad():
        cond = model(tokens[:1], text[:1], pooled[:1], micro[:1])  # (1, K, h, w)
        free = model(tokens[1:], text[1:], pooled[1:], micro_conditions(64, 64))
    # the model's (B, K, h, w) logits, read as the scheduler reads them: (B, h*w, K)
    torch.testing.assert_close(out[:1], cond.flatten(2).transpose(1, 2))
    torch.testing.assert_close(out[1:], free.flatten(2).transpose(1, 2))
    for labels, match in (([1, 0], "label 1"), ([True, 0], "label True"), ([0], "1 labels")):
        with pytest.raises(ConfigError, match=match):
            prior.logits(tokens.flatten(1), labels)
    bad = tokens.flatten(1).clone()
    bad[0, 3] = 35  # neither a code nor the mask token
    with pytest.raises(ConfigError, match="got 35"):
        prior.logits(bad, [0, 0])
    with pytest.raises(ConfigError, match=r"reads 4x4 grids as \(B, 16\)"):
        prior.logits(tokens.flatten(1)[:, :9], [0, 0])
    with pytest.raises(ConfigError, match="pooled embedding"):
        prior.set_text(text[:1], pooled[:1, :5])


def test_bf16_logits_come_back_float32_and_close():
    prior = AmusedPrior(random_uvit(TINY), "tiny")
    tokens, text, pooled, micro = uvit_inputs(TINY, batch=2, grid=(4, 4))
    prior.set_text(text[:1], pooled[:1], micro[:1])
    with pytest.raises(ConfigError, match="same length"):
        prior.set_unconditional(text[:1, :5], pooled[:1])
    want = prior.logits(tokens.flatten(1), [0, 0])
    got = prior.to(dtype=torch.bfloat16).logits(tokens.flatten(1), [0, 0])
    assert got.dtype == torch.float32
    assert prior.model.encoder_proj.weight.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0.1 * float(want.abs().max()))


def test_guidance_is_the_pipelines_and_the_resampler_draws():
    """The resampler's class guidance S with label 0 = the prompt and None = the empty prompt is
    aMUSEd's uncond + S (cond - uncond); a small grid is drawn at the window's centre."""
    prior = AmusedPrior(random_uvit(TINY), "tiny")
    tokens, text, pooled, micro = uvit_inputs(TINY, batch=2, grid=(4, 4))
    prior.set_text(text[:1], pooled[:1], micro[:1])
    prior.set_unconditional(text[1:], pooled[1:], micro[:1])
    idx = tokens[:1].flatten(1)
    cond, free = prior.logits(idx, [0]), prior.logits(idx, [None])
    sampler = MaskedResampler(prior, 32, (4, 4), torch.randn(32, 4), class_guidance=10.0)
    torch.testing.assert_close(sampler._logits(idx, [0]), free + 10 * (cond - free))
    small = MaskedResampler(prior, 32, (2, 3), torch.randn(32, 4), steps=3, class_guidance=4.0)
    gen = torch.Generator().manual_seed(0)
    drawn = small.sample(2, gen, labels=[0, 0])
    assert drawn.shape == (2, 2, 3) and int(drawn.max()) < 32


def test_vq_config_and_key_map():
    config = vq_config_from_diffusers(AMUSED_VQ | {"_class_name": "VQModel", "force_upcast": True})
    assert (config.ch, config.ch_mult, config.num_res_blocks) == (128, (1, 2, 2, 4, 6), 2)
    assert (config.z_channels, config.embed_dim, config.n_embed) == (64, 64, 8192)
    assert config.attn_resolutions == () and config.downsample_factor == 16
    with torch.device("meta"):
        vq = AmusedVQ(config)
    names = set(vq.state_dict())
    assert not any("attn" in n for n in names)
    assert tuple(vq.codebook.shape) == (8192, 64)
    assert (
        vqclip_name("decoder.up_blocks.0.resnets.2.conv2.weight", 5)
        == "decoder.up.4.block.2.conv2.weight"
    )
    assert (
        vqclip_name("decoder.up_blocks.3.upsamplers.0.conv.bias", 5)
        == "decoder.up.1.upsample.conv.bias"
    )
    assert vqclip_name("encoder.down_blocks.1.resnets.0.conv_shortcut.weight", 5) == (
        "encoder.down.1.block.0.nin_shortcut.weight"
    )
    assert (
        vqclip_name("decoder.mid_block.resnets.1.norm2.bias", 5) == "decoder.mid.block_2.norm2.bias"
    )
    assert vqclip_name("encoder.conv_norm_out.weight", 5) == "encoder.norm_out.weight"
    for bad in (
        "encoder.mid_block.attentions.0.to_q.weight",
        "decoder.up_blocks.5.resnets.0.conv1.weight",
    ):
        with pytest.raises(KeyError):
            vqclip_name(bad, 5)
    with pytest.raises(CheckpointError, match=r"mid_block\.attentions\.0\.to_q\.weight"):
        convert_state_dict(
            {"encoder.mid_block.attentions.0.to_q.weight": torch.zeros(1)}, 5, source="x"
        )
    with pytest.raises(ConfigError, match="mid_block_add_attention=True is not supported"):
        vq_config_from_diffusers(AMUSED_VQ | {"mid_block_add_attention": True})
    with pytest.raises(ConfigError, match="norm_num_groups=8"):
        vq_config_from_diffusers(AMUSED_VQ | {"norm_num_groups": 8})
    with pytest.raises(ConfigError, match="unknown VQModel settings: extra"):
        vq_config_from_diffusers(AMUSED_VQ | {"extra": 1})


def test_tokens_pad_with_bang_and_split_it_out():
    ids = amused_tokens("a red fox")
    assert ids.shape == (1, 77)
    torch.testing.assert_close(ids, tokenize("a red fox"))  # pad "!" is id 0: vqclip's padding
    bang = amused_tokens("wow!")[0, :4].tolist()
    assert bang == [49406, *default_tokenizer().encode("wow"), 0, 49407]  # "!" is the pad token
    long = amused_tokens(" ".join(["word"] * 100))[0]
    assert long[0] == 49406 and long[-1] == 49407 and (long[1:-1] != 0).all()


def test_the_pad_token_is_the_one_the_tokenizers_map_names(tmp_path):
    path = tmp_path / "special_tokens_map.json"
    for written, pad in (
        ({"pad_token": "!"}, "!"),
        ({"pad_token": {"content": "<|endoftext|>", "lstrip": False}}, "<|endoftext|>"),
        ({"eos_token": "<|endoftext|>"}, "<|endoftext|>"),  # none named: transformers' default
    ):
        path.write_text(json.dumps(written))
        assert tokenizer_pad_token(path) == pad
    eot = amused_tokens("a fox", pad="<|endoftext|>")[0].tolist()
    fox = default_tokenizer().encode("a fox")
    assert eot == [49406, *fox, 49407, *[49407] * (75 - len(fox))]
    split = amused_tokens("a<|endoftext|>b", pad="<|endoftext|>")[0, :5].tolist()
    assert split == [
        49406,
        *default_tokenizer().encode("a"),
        49407,
        *default_tokenizer().encode("b"),
        49407,
    ]
    path.write_text(json.dumps({"pad_token": "<pad>"}))
    with pytest.raises(CheckpointError, match="pad_token '<pad>' is not one of CLIP's tokens"):
        tokenizer_pad_token(path)
    with pytest.raises(ConfigError, match="not one of CLIP's tokens"):
        amused_tokens("a fox", pad="<pad>")


def test_set_prompt_conditions_the_prior():
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(**TEXT_CLIP)).eval()
    config = replace(TINY, encoder_hidden_size=32, cond_embed_dim=24)
    prior = AmusedPrior(random_uvit(config), "tiny")
    set_prompt(prior, clip, "a lighthouse")
    hidden, pooled = amused_text_condition(clip, "")
    assert hidden.shape == (1, 77, 32) and pooled.shape == (1, 24)
    by_hand = AmusedPrior(prior.model, "tiny")
    by_hand.set_text(*amused_text_condition(clip, "a lighthouse"))
    by_hand.set_unconditional(hidden, pooled)
    tokens = torch.full((1, 16), 39)  # all masked
    for label in (0, None):
        torch.testing.assert_close(prior.logits(tokens, [label]), by_hand.logits(tokens, [label]))
    assert not torch.allclose(prior.logits(tokens, [0]), prior.logits(tokens, [None]))


# with the [parity] extra: the same tiny weights through diffusers and transformers


def rmsnorm_at_input_precision(self, x):
    """diffusers' RMSNorm, but with the mean square in float64 for float64 input (theirs always
    takes it in float32, which bounds a float64 comparison near 1e-7)."""
    ms = x.to(torch.promote_types(x.dtype, torch.float32)).pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(ms + self.eps)
    return x if self.weight is None else x * self.weight


@pytest.mark.parametrize("config", [TINY, TINY_DOWN], ids=["flat", "down-up-bias-noaffine"])
def test_uvit_logits_equal_diffusers(config, monkeypatch):
    d = diffusers()
    ref = d.UVit2DModel(**asdict(config)).eval()
    model = random_uvit(config)
    ref.load_state_dict(model.state_dict(), strict=True)
    tokens, text, pooled, micro = uvit_inputs(config)
    with torch.no_grad():
        want, got = ref(tokens, text, pooled, micro), model(tokens, text, pooled, micro)
    assert got.shape == (3, 32, 4, 6)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    monkeypatch.setattr(d.models.normalization.RMSNorm, "forward", rmsnorm_at_input_precision)
    ref.double()
    model.double()
    args = (tokens, text.double(), pooled.double(), micro.double())
    with torch.no_grad():
        torch.testing.assert_close(model(*args), ref(*args), rtol=0, atol=1e-10)


def test_real_configs_equal_diffusers_on_meta():
    d = diffusers()
    for config in (AMUSED_256, AMUSED_512):
        with torch.device("meta"):
            want = d.UVit2DModel(**asdict(config)).state_dict()
            got = UViT2D(config).state_dict()
        assert {k: tuple(v.shape) for k, v in got.items()} == {
            k: tuple(v.shape) for k, v in want.items()
        }
    with torch.device("meta"):
        ref = d.VQModel(**AMUSED_VQ).state_dict()
        vq = AmusedVQ(vq_config_from_diffusers(AMUSED_VQ)).state_dict()
    mapped = convert_state_dict(ref, 5, source="vqvae")
    assert len(mapped) == len(ref)  # one to one
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {
        k: tuple(v.shape) for k, v in vq.items()
    }


def test_vq_encode_quantize_decode_equal_diffusers():
    d = diffusers()
    torch.manual_seed(0)
    ref = d.VQModel(**TINY_VQ).eval().double()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    vq = AmusedVQ(vq_config_from_diffusers(dict(ref.config))).eval().double()
    load_strict(vq, convert_state_dict(ref.state_dict(), 2, source="vqvae"), source="vqvae")
    image = torch.rand(2, 3, 16, 24, dtype=torch.float64)  # aMUSEd's images are in [0, 1]
    with torch.no_grad():
        z_ref = ref.encode(image).latents
        z = vq.encode(image * 2 - 1)  # vqclip's are in [-1, 1]
        torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-10)
        q_ref, _, (_, _, idx_ref) = ref.quantize(z_ref)
        q, idx = vq.quantize(z)
        assert torch.equal(idx.flatten(), idx_ref.flatten())
        torch.testing.assert_close(q, q_ref, rtol=0, atol=1e-12)
        out_ref = ref.decode(q_ref).sample
        torch.testing.assert_close(vq.decode(q), out_ref * 2 - 1, rtol=0, atol=1e-10)
        # the pipeline's path: codes straight from the codebook
        codes = torch.randint(16, (2, 3, 5))
        pipe = ref.decode(codes.flatten(), force_not_quantize=True, shape=(2, 3, 5, 4)).sample
        torch.testing.assert_close(
            vq.decode(vq.quantize.lookup(codes)), pipe * 2 - 1, rtol=0, atol=1e-10
        )
    z.requires_grad_(True)
    vq.quantize(z)[0].sum().backward()  # straight through: the gradient reaches z unchanged
    torch.testing.assert_close(z.grad, torch.ones_like(z))


def test_load_amused_vq_reads_a_diffusers_folder(tmp_path):
    d = diffusers()
    torch.manual_seed(0)
    ref = d.VQModel(**TINY_VQ).eval()
    ref.half().save_pretrained(tmp_path / "vqvae", variant="fp16")
    vq = load_amused_vq(tmp_path / "vqvae")
    assert vq.downsample_factor == 2 and vq.encoder.conv_in.weight.dtype == torch.float32
    torch.testing.assert_close(vq.codebook, ref.quantize.embedding.weight.float())
    sd = safetensors.torch.load_file(
        tmp_path / "vqvae" / "diffusion_pytorch_model.fp16.safetensors"
    )
    del sd["decoder.up_blocks.1.resnets.0.conv1.weight"]
    safetensors.torch.save_file(sd, tmp_path / "vqvae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"missing keys \(1\):\n    decoder\.up\.0\.block\.0\.conv1\.weight"
    ):
        load_amused_vq(tmp_path / "vqvae")  # the full-precision file comes first


def test_load_amused_reads_diffusers_save_pretrained(tmp_path):
    d = diffusers()
    model = random_uvit(TINY_DOWN)
    ref = d.UVit2DModel(**asdict(TINY_DOWN)).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    ref.save_pretrained(tmp_path / "transformer")
    prior = load_amused(tmp_path / "transformer")
    assert prior.model.config == TINY_DOWN and prior.window == (4, 4)
    tokens, text, pooled, micro = uvit_inputs(TINY_DOWN, batch=1, grid=(4, 4))
    prior.set_text(text, pooled, micro)
    with torch.no_grad():
        want = ref(tokens, text, pooled, micro).flatten(2).transpose(1, 2)
    torch.testing.assert_close(prior.logits(tokens.flatten(1), [0]), want, rtol=0, atol=1e-5)


def test_text_condition_equals_clip_text_model_with_projection():
    tr = transformers()
    config = tr.CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=128,  # vqclip's CLIP MLP is 4x its width
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=24,
        bos_token_id=0,
        eos_token_id=2,  # aMUSEd's text config: the legacy rule, pooled at the largest id
        pad_token_id=1,
    )
    torch.manual_seed(0)
    ref = tr.CLIPTextModelWithProjection(config).eval()
    clip = CLIP(CLIPConfig(**TEXT_CLIP)).eval()
    load_text_tower(clip, ref.state_dict(), source="text_encoder")
    prompts = ["a portrait of an old fisherman, oil painting!", ""]
    tokens = torch.cat([amused_tokens(p) for p in prompts])
    with torch.no_grad():
        out = ref(tokens, output_hidden_states=True)
    hidden, pooled = text_condition(clip, tokens)
    torch.testing.assert_close(hidden, out.hidden_states[-2], rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, out.text_embeds, rtol=0, atol=1e-5)
    one = amused_text_condition(clip, prompts[0])
    torch.testing.assert_close(one[0], hidden[:1])
    sd = dict(ref.state_dict())
    del sd["text_model.encoder.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(CheckpointError, match=r"layers\.1\.self_attn\.q_proj\.bias"):
        clip_text_state_dict(sd)


@pytest.mark.parametrize(
    "prompt",
    [
        "a photo of an astronaut riding a horse on mars",
        "",
        "Hello,   World! café 123",
        "It's a dog's life: 3.14!!",
        " ".join(["word"] * 100),
    ],
)
@pytest.mark.parametrize("pad", ["!", "<|endoftext|>"])
def test_tokens_equal_clip_tokenizer_padding(prompt, pad):
    hf = hf_clip_tokenizer(pad)
    want = hf(prompt, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    torch.testing.assert_close(amused_tokens(prompt, pad=pad), want.input_ids)
