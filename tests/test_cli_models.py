"""`vqclip models ...` through vqclip.cli.main, with the network replaced by in-memory bytes."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import pytest

from vqclip.cli import main
from vqclip.weights import cache, download, registry

# helper functions


class FakeServer:
    """Stands in for urllib.request.urlopen: serves `routes` (url -> bytes), records requests."""

    def __init__(self, routes: dict[str, bytes]):
        self.routes = routes
        self.requests: list[urllib.request.Request] = []

    def __call__(self, request, timeout=None):
        self.requests.append(request)
        if request.full_url not in self.routes:
            raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)
        body = self.routes[request.full_url]
        response = io.BytesIO(body)
        response.headers = {"Content-Length": str(len(body))}
        return response


def serve(monkeypatch, routes: dict[str, bytes]) -> FakeServer:
    server = FakeServer(routes)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    return server


def primary_url(name: str, role: str) -> str:
    return download.source_urls(registry.get_spec(name).file(role))[0]


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


def test_list_shows_cached_status_changing(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "  no  " in row(out, "vqgan_imagenet_f16_1024")
    assert row(out, "clip_vit_b32_openai").split()[1] == "clip"

    spec = registry.get_spec("vqgan_imagenet_f16_1024")
    for path in cache.cached_paths(spec).values():
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
    assert entries["vqgan_imagenet_f16_16384"]["files"][1]["sha256"] is None


def test_download_command_writes_the_file(monkeypatch, capsys):
    url = primary_url("clip_vit_b32_openai", "checkpoint")
    server = serve(monkeypatch, {url: b"clip weights"})
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert main(["models", "download", "ViT-B/32", "--no-progress"]) == 0
    path = cache.cached_paths(registry.get_spec("ViT-B/32"))["checkpoint"]
    assert path.read_bytes() == b"clip weights"
    assert server.requests[0].get_header("Authorization") == "Bearer hf_secret"
    assert "downloaded" in capsys.readouterr().out

    assert main(["models", "download", "clip_vit_b32_openai"]) == 0
    assert len(server.requests) == 1  # cached: checked, not fetched again
    assert "already cached" in capsys.readouterr().out


def test_download_offline_exits_2_with_instructions(monkeypatch, capsys):
    monkeypatch.setenv("VQCLIP_OFFLINE", "1")
    assert main(["models", "download", "vqgan_gumbel_f8_8192"]) == 2
    err = capsys.readouterr().err
    ckpt = cache.cached_paths(registry.get_spec("vqgan_gumbel_f8_8192"))["checkpoint"]
    assert str(ckpt) in err and primary_url("vqgan_gumbel_f8_8192", "checkpoint") in err


def test_unknown_model_exits_2_with_did_you_mean(capsys):
    assert main(["models", "download", "vqgan_imagenet_f16_1638"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean" in err and "vqgan_imagenet_f16_16384" in err


def test_path_prints_where_files_go(capsys):
    assert main(["models", "path", "wikiart_16384"]) == 0
    out = capsys.readouterr().out
    spec = registry.get_spec("wikiart_16384")
    assert str(cache.model_dir(spec)) in out
    assert str(cache.cached_paths(spec)["checkpoint"]) in out and "missing" in out


def test_convert_taming_checkpoint_then_load(tmp_path, capsys, tiny_vqgan_config):
    pytest.importorskip("vqclip.vqgan")
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


def test_download_convert_and_load_a_registry_vqgan(monkeypatch, tmp_path, tiny_vqgan_config):
    pytest.importorskip("vqclip.vqgan")
    from vqclip.weights import load_vqgan_by_name

    _, ckpt, yaml = tiny_taming_files(tmp_path, tiny_vqgan_config)
    name = "vqgan_imagenet_f16_1024"
    serve(monkeypatch, {
        primary_url(name, "checkpoint"): ckpt.read_bytes(),
        primary_url(name, "config"): yaml.read_bytes(),
    })  # fmt: skip
    assert main(["models", "download", name, "--no-progress"]) == 0
    assert main(["models", "convert", "imagenet_1024", "--no-progress"]) == 0
    spec = registry.get_spec(name)
    assert cache.is_converted(spec)

    for path in cache.cached_paths(spec).values():
        path.unlink()  # the converted copy alone must be enough now
    assert load_vqgan_by_name(name).config == tiny_vqgan_config


def test_convert_clip_file_keeps_the_activation(tmp_path):
    clip = pytest.importorskip("vqclip.clip")
    import torch

    config = clip.CLIPConfig(embed_dim=16, image_size=32, patch_size=8, vision_width=64,
                             vision_layers=1, context_length=12, vocab_size=100, text_width=64,
                             text_layers=1, quick_gelu=False)  # fmt: skip
    torch.save(clip.CLIP(config).state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    out = tmp_path / "laion.safetensors"
    args = ["models", "convert", str(tmp_path / "open_clip_pytorch_model.bin")]
    assert main([*args, "--no-quick-gelu", "--out", str(out)]) == 0
    assert clip.load_clip(out).config == config
