"""Shared fixtures: tiny random models that run in milliseconds on a CPU."""

import http.client
import os
import urllib.request

import huggingface_hub.constants
import pytest
import torch
from hypothesis import settings

from vqclip.vqgan import VQGAN, VQGANConfig

# The smallest VQGAN taming's layout allows: GroupNorm(32) needs ch to be a multiple of 32.
# Attention sits at resolution 16, so encoder, decoder and middle all have attention blocks.
TINY_VQGAN = dict(
    ch=32,
    out_ch=3,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(16,),
    dropout=0.0,
    in_channels=3,
    resolution=32,
    z_channels=8,
    double_z=False,
    embed_dim=4,
    n_embed=16,
)


@pytest.fixture
def tiny_vqgan_config() -> VQGANConfig:
    return VQGANConfig(**TINY_VQGAN, quantizer="vq")


@pytest.fixture
def tiny_gumbel_config() -> VQGANConfig:
    return VQGANConfig(**TINY_VQGAN, quantizer="gumbel")


@pytest.fixture
def tiny_vqgan(tiny_vqgan_config: VQGANConfig) -> VQGAN:
    """A seeded random VQGAN (downsample factor 2), in eval mode with frozen weights."""
    torch.manual_seed(0)
    return VQGAN(tiny_vqgan_config).eval().requires_grad_(False)


# A CLIP with the real tokenizer's vocabulary and context (so real prompts work) but tiny widths.
TINY_CLIP = dict(
    embed_dim=16,
    image_size=16,
    patch_size=8,
    vision_width=64,
    vision_layers=2,
    text_width=32,
    text_layers=2,
    text_heads=2,
    quick_gelu=True,
)


def _tiny_clip(seed: int):
    from vqclip.clip import CLIP, CLIPConfig

    torch.manual_seed(seed)
    return CLIP(CLIPConfig(**TINY_CLIP)).eval().requires_grad_(False)


@pytest.fixture
def tiny_clip():
    return _tiny_clip(0)


@pytest.fixture
def tiny_clip_b():
    """A second, independently initialised tiny CLIP, for ensembles."""
    return _tiny_clip(1)


@pytest.fixture
def model_files(tmp_path, tiny_vqgan, tiny_clip):
    """The tiny models saved as files, and the `vqclip generate` flags that load them."""
    from vqclip.clip import save_clip
    from vqclip.vqgan import save_vqgan

    vqgan_path = tmp_path / "models" / "vqgan.safetensors"
    clip_path = tmp_path / "models" / "clip.safetensors"
    save_vqgan(tiny_vqgan, vqgan_path)
    save_clip(tiny_clip, clip_path)
    return ["--vqgan", str(vqgan_path), "--clip", str(clip_path)]


@pytest.fixture
def models(tiny_vqgan, tiny_clip):
    """A model cache that hands every job the tiny models, whatever names its config gives."""
    from vqclip.jobs import ModelCache

    return ModelCache(loader=lambda config: (tiny_vqgan, [tiny_clip]))


# CI runs property tests derandomised, so a landing never hinges on a lucky draw; run locally
# without CI=true to explore new examples.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def _no_network(request, timeout=None):
    url = getattr(request, "full_url", request)
    raise AssertionError(f"test touched the network: {url}")


_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_connect = http.client.HTTPConnection.connect


def _loopback_only(self):
    if self.host not in _LOOPBACK:
        raise AssertionError(f"test touched the network: {self.host}")
    return _connect(self)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test: its own working folder, no network beyond 127.0.0.1 (download tests run
    their own server there), a private weights cache and Hugging Face Hub cache, none of the
    user's offline/hub settings, and a Hub endpoint that refuses at once if anything asks it."""
    monkeypatch.chdir(tmp_path)  # whatever a test writes by a relative name lands here
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("VQCLIP_OFFLINE", "HF_HUB_OFFLINE", "HF_TOKEN", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(http.client.HTTPConnection, "connect", _loopback_only)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import (which a test may have done while
    # setting it); vqclip reads it at each call and only asks the Hub when online.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
