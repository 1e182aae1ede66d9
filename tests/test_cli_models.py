"""`vqclip models ...` through vqclip.cli.main; the hosts are a real HTTP server on 127.0.0.1
(tests/weights_server.py), with HF_ENDPOINT pointing at it for the Hub's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vqclip.cli import main
from vqclip.weights import cache, fetch, registry
from vqclip.weights.probe import probe
from vqclip.weights.registry import Host
from weights_server import PAYLOAD, FaultyServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DALLE = "/boris/vqgan_f16_16384/resolve/946c5d2f88276c3796bda51babbb4b9626f3d554"
B32 = "/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors"

# helper functions


@pytest.fixture
def hub(monkeypatch):
    s = FaultyServer()
    monkeypatch.setenv("HF_ENDPOINT", s.base)
    yield s
    s.close()


def row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(name + " "))


def tiny_taming_files(tmp_path, tiny_vqgan_config):
    """A random tiny VQGAN written in taming's .ckpt + YAML format."""
    import torch

    from vqclip.vqgan import VQGAN, save_taming

    torch.manual_seed(0)
    model = VQGAN(tiny_vqgan_config)
    ckpt, yaml = tmp_path / "tiny.ckpt", tmp_path / "tiny_model.yaml"
    save_taming(model, ckpt, yaml)
    return model, ckpt, yaml


# commands


def test_list_shows_cache_state_hosts_in_order_and_hash_state(capsys):
    assert main(["models"]) == 0  # no action: the list
    out = capsys.readouterr().out
    assert "  no  " in row(out, "vqgan_imagenet_f16_1024")
    assert row(out, "clip_vit_b32_openai").split()[1] == "clip"
    assert "pinned" in row(out, "vqgan_imagenet_f16_16384")
    assert "partly" in row(out, "vqgan_imagenet_f16_1024")  # the checkpoint pinned, not its YAML
    assert "first use" in row(out, "maskgit_imagenet_256") and "trust on first use" in out
    assert row(out, "maskgit_imagenet_256").split()[1] == "prior" and "MIT" in out
    lines = out.splitlines()
    at = lines.index(row(out, "vqgan_imagenet_f16_1024"))
    assert lines[at + 1].split() == ["hosts", "of", "the", "config:", "1.",
                                     "heibox.uni-heidelberg.de", "2.",
                                     "hf:Nehc/vqgan_imagenet_f16_1024@a33b797"]  # fmt: skip
    assert lines[at + 2].split()[4:] == ["1.", "heibox.uni-heidelberg.de", "2.",
                                         "hf:llvictorll/Maskgit-pytorch@main", "3.",
                                         "hf:Nehc/vqgan_imagenet_f16_1024@a33b797"]  # fmt: skip

    spec = registry.get_spec("vqgan_imagenet_f16_1024")
    ckpt = cache.own_path(spec, spec.file("checkpoint"))
    part, meta = fetch.part_paths(ckpt)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"w")
    meta.write_text(json.dumps({"url": spec.file("checkpoint").sources[0].url}))
    assert main(["models", "list"]) == 0
    assert "  partial  " in row(capsys.readouterr().out, "vqgan_imagenet_f16_1024")
    for f in spec.files:
        path = cache.own_path(spec, f)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"w")
    assert main(["models", "list", "--kind", "vqgan"]) == 0
    out = capsys.readouterr().out
    assert "  yes  " in row(out, "vqgan_imagenet_f16_1024")
    assert "clip_vit_b32_openai" not in out

    assert main(["models", "list", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["vqgan_imagenet_f16_1024"]["cached"] is True
    assert entries["clip_vit_l14_336_openai"]["input_size"] == 336
    ckpt = entries["vqgan_gumbel_f8_8192"]["files"][1]
    assert ckpt["sha256"] == registry.get_spec("gumbel_8192").file("checkpoint").sha256
    assert ckpt["hosts"][0]["commit_pinned"] is True and ckpt["hosts"][0]["note"]


def test_check_asks_each_host_and_says_which_answer(hub, capsys):
    hub.serve(B32, PAYLOAD, hub_commit=COMMIT)
    assert main(["models", "check", "ViT-B/32", "--timeout", "2"]) == 0
    out = capsys.readouterr().out
    assert "clip_vit_b32_openai" in out and "ok: 200, 51.2 kB" in out
    assert [s.method for s in hub.log] == ["HEAD"]  # asked, not downloaded

    assert main(["models", "check", "ViT-B/32", "ViT-B/16", "--timeout", "2"]) == 1
    out = capsys.readouterr().out
    assert "NO: HTTP 404" in out and "clip_vit_b16_openai: no host serves its checkpoint" in out


def test_check_offline_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("VQCLIP_OFFLINE", "1")
    assert main(["models", "check"]) == 0
    assert capsys.readouterr().out.strip() == (
        "offline (VQCLIP_OFFLINE=1): no host was asked. Unset it to check the hosts."
    )


def test_check_with_no_host_reachable_says_there_is_no_network(hub, capsys):
    hub.close()  # nothing listens on its port any more
    assert main(["models", "check", "ViT-B/32", "--timeout", "1"]) == 1
    out = capsys.readouterr().out
    assert "NO: connection refused" in out and "no network access" in out


def test_probe_sends_the_referer_and_spots_a_web_page(hub):
    page = hub.url("/links/share")
    url = hub.serve("/koofr.ckpt", PAYLOAD, need_referer=page)
    assert probe(Host(url=url, referer=page), timeout=2)[0] is True
    assert probe(Host(url=url), timeout=2)[:2] == (False, True)  # 400 without it
    html = hub.serve("/moved.ckpt", b"<html></html>", content_type="text/html")
    ok, reached, detail = probe(Host(url=html), timeout=2)
    assert (ok, reached) == (False, True) and "web page" in detail


def test_download_command_fetches_into_the_hub_cache_with_the_token(hub, monkeypatch, capsys):
    hub.serve(B32, b"clip weights", hub_commit=COMMIT)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert main(["models", "download", "ViT-B/32", "--no-progress"]) == 0
    path = cache.cached_paths(registry.get_spec("ViT-B/32"))["checkpoint"]
    assert path.read_bytes() == b"clip weights" and "models--timm--" in str(path)
    assert hub.requests(B32)[0].authorization == "Bearer hf_secret"
    assert "downloaded" in capsys.readouterr().out

    asked = len(hub.log)
    assert main(["models", "download", "clip_vit_b32_openai"]) == 0
    assert len(hub.log) == asked  # cached: checked, not fetched again
    assert "already cached" in capsys.readouterr().out


def test_download_offline_exits_2_with_instructions(monkeypatch, capsys):
    monkeypatch.setenv("VQCLIP_OFFLINE", "1")
    assert main(["models", "download", "vqgan_gumbel_f8_8192"]) == 2
    err = capsys.readouterr().err
    spec = registry.get_spec("vqgan_gumbel_f8_8192")
    assert str(cache.own_path(spec, spec.file("checkpoint"))) in err
    assert "neggles/vaedump/resolve/115a6c7eb8a93cf3114544421f1dbe1b725a99e7/" in err


def test_unknown_model_exits_2_with_did_you_mean(capsys):
    assert main(["models", "download", "vqgan_imagenet_f16_1638"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean" in err and "vqgan_imagenet_f16_16384" in err


def test_path_prints_where_files_go(capsys):
    assert main(["models", "path", "faceshq"]) == 0
    out = capsys.readouterr().out
    spec = registry.get_spec("faceshq")
    assert str(cache.model_dir(spec)) in out
    assert str(cache.cached_paths(spec)["checkpoint"]) in out and "missing" in out


def test_convert_taming_checkpoint_then_load(tmp_path, capsys, tiny_vqgan_config):
    import torch

    from vqclip.vqgan import load_vqgan

    model, ckpt, yaml = tiny_taming_files(tmp_path, tiny_vqgan_config)
    out = tmp_path / "out" / "tiny.safetensors"
    assert main(["models", "convert", str(ckpt), "--config", str(yaml), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    loaded = load_vqgan(out)  # finds tiny.json beside it
    assert loaded.config == tiny_vqgan_config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_download_convert_and_load_a_registry_vqgan(hub, tmp_path, tiny_vqgan_config):
    from vqclip.weights import load_vqgan_by_name

    _, ckpt, yaml = tiny_taming_files(tmp_path, tiny_vqgan_config)
    hub.serve(f"{DALLE}/model.ckpt", ckpt.read_bytes(), hub_commit=COMMIT)
    hub.serve(f"{DALLE}/config.yaml", yaml.read_bytes(), hub_commit=COMMIT)
    name = "vqgan_f16_16384_dalle_mini"
    assert main(["models", "download", name, "--no-progress"]) == 0
    assert main(["models", "convert", "boris/vqgan_f16_16384", "--no-progress"]) == 0
    spec = registry.get_spec(name)
    assert cache.is_converted(spec)

    hub.close()  # the converted copy alone must be enough now
    for path in cache.cached_paths(spec).values():
        path.unlink()
    assert load_vqgan_by_name(name).config == tiny_vqgan_config


def test_convert_clip_file_keeps_the_activation(tmp_path):
    import torch

    import vqclip.clip as clip

    config = clip.CLIPConfig(embed_dim=16, image_size=32, patch_size=8, vision_width=64,
                             vision_layers=1, context_length=12, vocab_size=100, text_width=64,
                             text_layers=1, quick_gelu=False)  # fmt: skip
    torch.save(clip.CLIP(config).state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    out = tmp_path / "laion.safetensors"
    args = ["models", "convert", str(tmp_path / "open_clip_pytorch_model.bin")]
    assert main([*args, "--no-quick-gelu", "--out", str(out)]) == 0
    assert clip.load_clip(out).config == config


def test_models_list_names_the_pairs_and_the_packaged_toy_models(capsys):
    from vqclip.cli import main

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "toy_vqgan" in out and "toy_clip_a" in out
    assert "toy" in out.split("PAIRS")[1] and "default" in out.split("PAIRS")[1]
    assert main(["models", "path", "toy_vqgan"]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith("toy_vqgan.safetensors") and Path(path).is_file()
    # the packaged priors are known by name to every models command
    assert main(["models", "path", "toy_shape_prior"]) == 0
    assert Path(capsys.readouterr().out.strip()).is_file()
    for action, words in (("check", "no host to check"), ("download", "nothing to download")):
        assert main(["models", action, "toy_shape_prior"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("toy_shape_prior: in the package") and words in out
