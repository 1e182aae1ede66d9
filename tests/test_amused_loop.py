"""aMUSEd as a VQGAN+CLIP pair, with tiny random models: the prior in the loop told the prompt's
text, aMUSEd's sampler rule, the registry entries (downloaded from a Hub on 127.0.0.1, placed by
hand, or missing offline) and the pairs `amused` and `amused512`. Real weights are never
fetched; the loop's quality with them is not measured here."""

from __future__ import annotations

import json
import re

import pytest
import safetensors.torch
import torch

from test_amused import TINY, TINY_VQ, random_uvit, write_transformer
from vqclip.cli import main
from vqclip.clip.config import CLIPConfig
from vqclip.clip.model import CLIP
from vqclip.errors import ConfigError
from vqclip.generate.config import GenerateConfig
from vqclip.generate.run import Run
from vqclip.prior.amused import AmusedPrior
from vqclip.prior.amused_text import (
    amused_text_condition,
    clip_text_state_dict,
    negative_text,
    prompt_text,
)
from vqclip.prior.masked import MaskedResampler
from vqclip.prior.plugin import extensions_for
from vqclip.vqgan.amused_vq import AmusedVQ, vq_config_from_diffusers, vqclip_name
from vqclip.weights import cache, registry
from weights_server import FaultyServer

FAST = dict(size=(8, 8), cutn=4, augments=(), noise_fac=0.0, device="cpu", precision="fp32")
PROMPT = "a portrait of an old fisherman, oil painting"
# A text tower whose widths are TINY's text inputs (24 wide states, 16 wide pooled embedding).
TEXT = dict(
    embed_dim=16,
    image_size=16,
    patch_size=8,
    vision_width=64,
    vision_layers=1,
    text_width=24,
    text_layers=2,
    text_heads=4,
    quick_gelu=True,
)
LICENCE = "OpenRAIL++ (aMUSEd; use restrictions apply)"
HUB = "/amused/amused-256/resolve/main/"
B32 = "/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MASK_TOKEN = 35  # the tiny scheduler config's, not TINY's default (vocab_size - 1 = 39)
LEVEL_PARTS = {"block": "resnets", "downsample": "downsamplers.0", "upsample": "upsamplers.0"}


# helper functions


def text_tower(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(CLIPConfig(**TEXT)).eval().requires_grad_(False)


def tiny_amused(seed: int = 0) -> AmusedPrior:
    """A random aMUSEd U-ViT for 4x4 grids of 32 codes, with a random text encoder."""
    prior = AmusedPrior(random_uvit(TINY, seed).requires_grad_(False), "tiny")
    prior.text_encoder = text_tower(seed)
    return prior


def config(**kwargs) -> GenerateConfig:
    settings = dict(
        prompts=(PROMPT,),
        seed=1,
        iterations=4,
        prior="tiny",
        prior_weight=0.0,
        prior_resample_every=2,
        prior_final_passes=1,
        prior_resample_fraction=0.5,
        prior_draw_steps=3,
        prior_class_guidance=10.0,
        prior_guidance=1.0,
    )
    return GenerateConfig(**{**FAST, **settings, **kwargs})


def make(vqgan, clip, prior=None, **kwargs) -> Run:
    c = config(**kwargs)
    extensions = extensions_for(c, prior=prior or tiny_amused())
    return Run(c, vqgan=vqgan, clips=[clip], extensions=extensions)


def diffusers_vq_state_dict(vq: AmusedVQ) -> dict[str, torch.Tensor]:
    """`vq`'s weights in diffusers' VQModel names (the inverse of vqclip_name), fp16."""
    n = len(vq.config.ch_mult)
    out = {}
    for key, value in vq.state_dict().items():
        name = re.sub(
            r"^encoder\.down\.(\d+)\.(block|downsample)\.",
            lambda m: f"encoder.down_blocks.{m[1]}.{LEVEL_PARTS[m[2]]}.",
            key,
        )
        name = re.sub(
            r"^decoder\.up\.(\d+)\.(block|upsample)\.",
            lambda m: f"decoder.up_blocks.{n - 1 - int(m[1])}.{LEVEL_PARTS[m[2]]}.",
            name,
        )
        name = re.sub(
            r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m[1]) - 1}.", name
        )
        name = name.replace(".nin_shortcut.", ".conv_shortcut.")
        name = name.replace(".norm_out.", ".conv_norm_out.")
        assert vqclip_name(name, n) == key
        out[name] = value.half()
    return out


def transformers_text_state_dict(clip: CLIP) -> dict[str, torch.Tensor]:
    """`clip`'s text tower in transformers' CLIPTextModelWithProjection names, fp16."""
    renamed = {
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
    }
    parts = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}  # fmt: skip
    out = {}
    for key, value in clip.state_dict().items():
        layer = "text_model.encoder.layers.{}."
        if key in renamed:
            out[renamed[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.t()
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", key):
            for p, chunk in zip("qkv", value.chunk(3), strict=True):
                out[layer.format(m[1]) + f"self_attn.{p}_proj.{m[2]}"] = chunk
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", key):
            out[layer.format(m[1]) + f"{parts[m[2]]}.{m[3]}"] = value
    assert set(clip_text_state_dict(out)) == {
        k for k in clip.state_dict() if not k.startswith(("visual.", "logit_scale"))
    }
    return {k: v.half().contiguous() for k, v in out.items()}


def amused_files(tmp_path) -> tuple[dict[str, bytes], dict]:
    """The Hub files of a tiny aMUSEd-256 (path in the repository -> bytes), and the models."""
    torch.manual_seed(0)
    vq = AmusedVQ(vq_config_from_diffusers(TINY_VQ))
    clip, uvit = text_tower(), random_uvit(TINY)
    write_transformer(tmp_path / "transformer", uvit)
    text_config = dict(model_type="clip_text_model", architectures=["CLIPTextModelWithProjection"],
                       hidden_size=24, intermediate_size=96, projection_dim=16,
                       num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                       vocab_size=49408, hidden_act="quick_gelu", layer_norm_eps=1e-5)  # fmt: skip
    scheduler = {"_class_name": "AmusedScheduler", "mask_token_id": MASK_TOKEN}
    weights = "diffusion_pytorch_model.fp16.safetensors"
    files = {
        "vqvae/config.json": json.dumps({"_class_name": "VQModel", **TINY_VQ}).encode(),
        f"vqvae/{weights}": safetensors.torch.save(diffusers_vq_state_dict(vq)),
        "transformer/config.json": (tmp_path / "transformer" / "config.json").read_bytes(),
        f"transformer/{weights}": (tmp_path / "transformer" / weights).read_bytes(),
        "scheduler/scheduler_config.json": json.dumps(scheduler).encode(),
        "text_encoder/config.json": json.dumps(text_config).encode(),
        "text_encoder/model.fp16.safetensors": safetensors.torch.save(
            transformers_text_state_dict(clip)
        ),
        # transformers' layout; the end token as the pad token (the one the loader must read)
        "tokenizer/special_tokens_map.json": json.dumps(
            {
                "bos_token": {"content": "<|startoftext|>"},
                "eos_token": "<|endoftext|>",
                "pad_token": {"content": "<|endoftext|>", "lstrip": False},
            }
        ).encode(),
    }
    return files, {"vq": vq, "clip": clip, "uvit": uvit}


def check_loaded(models) -> tuple:
    """The aMUSEd models loaded by registry name equal the ones written (in fp16)."""
    from vqclip.prior.resolve import load_prior_by_name
    from vqclip.weights import load_vqgan_by_name

    vq = load_vqgan_by_name("amused_vq_256")
    assert isinstance(vq, AmusedVQ)
    assert torch.equal(vq.codebook, models["vq"].codebook.half().float())
    prior = load_prior_by_name("amused_256")
    assert isinstance(prior, AmusedPrior) and prior.mask_token == MASK_TOKEN
    assert prior.model.config == TINY and prior.window == (4, 4)
    want = models["uvit"].embed.embeddings.weight.half().float()
    assert torch.equal(prior.model.embed.embeddings.weight, want)
    got = prior.text_encoder.token_embedding.weight
    assert torch.equal(got, models["clip"].token_embedding.weight.half().float())
    assert prior.pad_token == "<|endoftext|>"  # the tokenizer's, read from its file
    return vq, prior


# the prior in the loop


@pytest.mark.parametrize("sampler", ["vqclip", "amused"])
def test_the_loop_runs_with_the_prompts_text_and_is_seeded(tiny_vqgan, tiny_clip, sampler):
    run = make(tiny_vqgan, tiny_clip, init="prior", prior_candidates=2, prior_sampler=sampler)
    (plugin,) = run.extensions
    assert isinstance(plugin.sampler, MaskedResampler) and plugin.sampler.rule == sampler
    assert plugin.labels == [0] and plugin.sampler.class_guidance == 10.0
    assert run.notes(0) == {"prior_text": PROMPT}
    image = run.run()
    assert torch.isfinite(image).all() and run.final_z is not None
    again = make(tiny_vqgan, tiny_clip, init="prior", prior_candidates=2, prior_sampler=sampler)
    assert torch.equal(image, again.run())
    other = make(
        tiny_vqgan, tiny_clip, init="prior", prior_candidates=2, prior_sampler=sampler, seed=2
    )
    assert not torch.equal(image, other.run())


def test_the_prompts_positive_text_reaches_the_prior(tiny_vqgan, tiny_clip):
    prior = tiny_amused()
    tokens = torch.full((1, 16), prior.mask_token)
    make(tiny_vqgan, tiny_clip, prior=prior, prompts=("a red fox:2|blurry:-1",))
    assert prior.logits(tokens, [0]).shape == (1, 16, 32)
    fox = prior.logits(tokens, [0])
    run = make(tiny_vqgan, tiny_clip, prior=prior, prompts=("a lighthouse at night",))
    assert run.notes(0)["prior_text"] == "a lighthouse at night"
    assert not torch.allclose(prior.logits(tokens, [0]), fox)
    # no positive text: the prior is told the empty prompt
    make(tiny_vqgan, tiny_clip, prior=prior, prompts=("blurry:-1",))
    empty = AmusedPrior(prior.model, "tiny")
    empty.set_text(*amused_text_condition(prior.text_encoder, ""))
    torch.testing.assert_close(prior.logits(tokens, [0]), empty.logits(tokens, [0]))
    assert prompt_text("a red fox:2|blurry:-1") == "a red fox"
    assert prompt_text("a forest | at dusk:0.5 ^ a castle") == "a forest, at dusk, a castle"


def test_the_prompts_negative_text_is_the_unconditional_text(tiny_vqgan, tiny_clip):
    prior = tiny_amused()
    tokens = torch.full((1, 16), prior.mask_token)
    run = make(tiny_vqgan, tiny_clip, prior=prior, prompts=("a red fox|blurry:-1|dark:-0.5",))
    assert run.notes(0) == {"prior_text": "a red fox", "prior_negative_text": "blurry, dark"}
    negative = prior.logits(tokens, [None])
    by_hand = AmusedPrior(prior.model, "tiny")
    by_hand.set_unconditional(*amused_text_condition(prior.text_encoder, "blurry, dark"))
    torch.testing.assert_close(negative, by_hand.logits(tokens, [None]))
    make(tiny_vqgan, tiny_clip, prior=prior, prompts=("a red fox",))  # none: the empty prompt
    by_hand.set_unconditional(*amused_text_condition(prior.text_encoder, ""))
    torch.testing.assert_close(prior.logits(tokens, [None]), by_hand.logits(tokens, [None]))
    assert not torch.allclose(prior.logits(tokens, [None]), negative)
    assert negative_text("a cat:2|blurry:-1 ^ a dog|noise:-2") == "blurry, noise"
    assert negative_text("a cat") == ""


def test_a_batch_of_different_prompts_is_refused_one_text_is_not(tiny_vqgan, tiny_clip):
    with pytest.raises(ConfigError, match="one text for the whole batch") as e:
        make(tiny_vqgan, tiny_clip, prompts=("a cat", "a dog"), batch_size=2)
    assert e.value.field == "prompts" and "'a cat', 'a dog'" in str(e.value)
    with pytest.raises(ConfigError, match="'a cat' \\(not 'blurry'\\), 'a cat'"):
        make(tiny_vqgan, tiny_clip, prompts=("a cat|blurry:-1", "a cat"), batch_size=2)
    run = make(
        tiny_vqgan, tiny_clip, prompts=("a cat|blurry:-1", "a cat:2|blurry:-1"), batch_size=2
    )
    assert run.extensions[0].labels == [0, 0]
    with pytest.raises(ConfigError, match="not a class") as e:
        make(tiny_vqgan, tiny_clip, prior_class=0)
    assert e.value.field == "prior_class"
    bare = tiny_amused()
    bare.text_encoder = None
    with pytest.raises(ConfigError, match="without its text encoder"):
        make(tiny_vqgan, tiny_clip, prior=bare)


# aMUSEd's sampler rule


def test_amused_rule_keeps_a_draw_a_round_and_the_last_token_for_the_last_round():
    sampler = MaskedResampler(tiny_amused(), 32, (4, 4), torch.randn(32, 4), steps=12,
                              rule="amused")  # fmt: skip
    total = remaining = torch.tensor([[4.0]])
    left = []
    for s in range(12):
        remaining = sampler._left(total, remaining, s)
        left.append(int(remaining))
    assert left == [3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    assert int(sampler._left(torch.tensor([[256.0]]), torch.tensor([[256.0]]), 0)) == 253
    assert sampler._class_scale(0) == sampler._class_scale(11)  # aMUSEd's guidance is constant


def test_amused_rule_draws_as_diffusers_amused_scheduler():
    """vqclip's masked sampler with rule "amused" and class guidance 10 against the pipeline's
    loop (uncond + 10 (cond - uncond), then AmusedScheduler.step) on the same logits and the
    same CPU generator: token for token."""
    d = pytest.importorskip("diffusers", reason="needs the [parity] extra")
    prior = tiny_amused()
    prior.set_text(torch.randn(1, 77, 24), torch.randn(1, 16))
    prior.set_unconditional(torch.randn(1, 77, 24), torch.randn(1, 16))
    sampler = MaskedResampler(prior, 32, (4, 4), torch.randn(32, 4), steps=12,
                              class_guidance=10.0, rule="amused")  # fmt: skip
    got = sampler.sample(3, torch.Generator().manual_seed(7), labels=[0, 0, 0])

    scheduler = d.AmusedScheduler(mask_token_id=prior.mask_token)
    scheduler.set_timesteps(12)
    generator = torch.Generator().manual_seed(7)
    tokens = torch.full((3, 16), prior.mask_token)
    for t in scheduler.timesteps:
        cond, uncond = prior.logits(tokens, [0] * 3), prior.logits(tokens, [None] * 3)
        logits = uncond + 10.0 * (cond - uncond)
        tokens = scheduler.step(logits, t, tokens, generator=generator).prev_sample
    assert torch.equal(got.flatten(1), tokens)


# the registry and the pairs


def test_registry_entries_and_pairs():
    for pixels in (256, 512):
        vq, prior = registry.get_spec(f"amused_vq_{pixels}"), registry.get_spec(f"amused_{pixels}")
        assert (vq.kind, vq.preset, prior.kind, prior.preset) == ("vqgan", "amused", "prior",
                                                                  "amused")  # fmt: skip
        for spec in (vq, prior):
            assert spec.licence == LICENCE and "OpenRAIL++" in spec.notice
            for f in spec.files:
                (host,) = f.sources
                assert (host.hf_repo, host.revision) == (f"amused/amused-{pixels}", "main")
                assert f.sha256 is None and "trust on first use" in f.sha256_note
        paths = {f.role: f.sources[0].hf_filename for f in (*vq.files, *prior.files)}
        assert paths["text_encoder"] == "text_encoder/model.fp16.safetensors"
        assert vq.file("checkpoint").sources[0].hf_filename == (
            "vqvae/diffusion_pytorch_model.fp16.safetensors"
        )
        assert prior.file("checkpoint").sources[0].hf_filename == (
            "transformer/diffusion_pytorch_model.fp16.safetensors"
        )
        assert 1.2e9 < prior.size_bytes < 1.5e9 and 2.9e8 < vq.size_bytes < 3e8
    assert registry.get_spec("amused/amused-512").name == "amused_512"
    for name, pixels in (("amused", 256), ("amused512", 512)):
        pair = registry.resolve_pair(name)
        assert (pair.vqgan, pair.clips) == (f"amused_vq_{pixels}", ("clip_vit_b32_openai",))
        defaults = dict(pair.defaults)
        assert defaults["prior"] == f"amused_{pixels}" and defaults["size"] == (pixels, pixels)
        assert (defaults["prior_draw_steps"], defaults["prior_class_guidance"]) == (12, 10.0)
        assert defaults["prior_sampler"] == "vqclip" and defaults["prior_weight"] == 0.0
        GenerateConfig(prompts=(PROMPT,), **defaults)  # valid settings
    assert [s.name for s in registry.specs_named("amused")] == [
        "amused_vq_256", "clip_vit_b32_openai", "amused_256"]  # fmt: skip


def test_models_list_shows_the_licence(capsys):
    assert main(["models", "list", "--kind", "prior"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("amused_")]
    assert len(rows) == 2 and all(row.endswith(LICENCE) for row in rows)


@pytest.mark.parametrize("name", ["amused_vq_256", "amused_512"])
def test_convert_refuses_files_that_load_as_they_are(name, capsys):
    assert main(["models", "convert", name, "--no-progress"]) == 2
    assert "loads from its own files as they are" in capsys.readouterr().err


def test_download_prints_the_licence_once_then_loads_by_name_and_runs(
    tmp_path, capsys, monkeypatch, tiny_clip
):
    files, models = amused_files(tmp_path)
    hub = FaultyServer()
    monkeypatch.setenv("HF_ENDPOINT", hub.base)
    try:
        for path, body in files.items():
            hub.serve(HUB + path, body, hub_commit=COMMIT)
        hub.serve(B32, b"clip weights", hub_commit=COMMIT)
        assert main(["models", "download", "amused", "--no-progress"]) == 0
        err = capsys.readouterr().err
        assert err.count("licensed under OpenRAIL++") == 2  # the VQ model's and the prior's
        assert "amused_256: aMUSEd's weights (amused/amused-256)" in err
        assert main(["models", "download", "amused", "--no-progress"]) == 0
        assert "OpenRAIL++" not in capsys.readouterr().err  # cached: nothing downloaded
    finally:
        hub.close()
    snapshot = cache.cached_paths(registry.get_spec("amused_256"))
    assert snapshot["text_encoder"].parent.name == "text_encoder"  # the Hub's layout
    vq, _ = check_loaded(models)
    c = config(prior="amused_256", iterations=2, prior_resample_every=1)
    run = Run(c, vqgan=vq, clips=[tiny_clip], extensions=extensions_for(c))
    assert torch.isfinite(run.run()).all() and run.notes(0) == {"prior_text": PROMPT}


def test_files_placed_by_hand_load_offline(tmp_path, monkeypatch):
    files, models = amused_files(tmp_path)
    monkeypatch.setenv("VQCLIP_OFFLINE", "1")
    for name in ("amused_vq_256", "amused_256"):
        spec = registry.get_spec(name)
        for f in spec.files:
            path = cache.own_path(spec, f)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(files[f.sources[0].hf_filename])
    check_loaded(models)


def test_the_amused_pair_offline_names_every_missing_file_in_one_message(tmp_path, capsys,
                                                                          monkeypatch):  # fmt: skip
    monkeypatch.setenv("VQCLIP_OFFLINE", "1")  # VQCLIP_HOME is an empty folder (conftest)
    out = tmp_path / "fisherman.png"
    argv = ["generate", PROMPT, "--model", "amused", "-o", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not out.exists()
    assert err.count("vqclip: error") == 1 and "offline mode is on (VQCLIP_OFFLINE=1)" in err
    assert "9 weight file(s) are not in the cache" in err
    roles = (
        "checkpoint",
        "config",
        "scheduler",
        "text_encoder",
        "text_encoder_config",
        "tokenizer",
    )
    for role in roles:
        assert f"(amused_256 {role})" in err
    assert "(amused_vq_256 checkpoint)" in err and "(clip_vit_b32_openai checkpoint)" in err
    for path in ("vqvae/diffusion_pytorch_model.fp16.safetensors", "text_encoder/config.json",
                 "transformer/diffusion_pytorch_model.fp16.safetensors"):  # fmt: skip
        assert f"/amused/amused-256/resolve/main/{path}" in err
    assert "Or, once online: vqclip models download amused\n" in err
