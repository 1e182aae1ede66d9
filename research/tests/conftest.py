"""Fixtures of the research tests: toy-shaped models a few channels wide, and no network."""

from __future__ import annotations

import urllib.request
from dataclasses import replace

import pytest
import torch

from research.toy.train_clip import TOY_CLIP
from research.toy.train_vqgan import TOY_VQGAN
from vqclip.clip import CLIP, CLIPConfig
from vqclip.vqgan import VQGAN, VQGANConfig

# A guide of the toy kind (ResNet tower at 64 px), a few channels wide.
SMALL_GUIDE = replace(TOY_CLIP, embed_dim=16, vision_width=8, text_width=16, text_layers=1)
# f4 like the toy VQGAN, so 64 px images make a 16x16 grid.
SMALL_VQGAN = replace(TOY_VQGAN, z_channels=8, embed_dim=4, n_embed=16)


@pytest.fixture
def small_guide_config() -> CLIPConfig:
    return SMALL_GUIDE


@pytest.fixture
def small_vqgan_config() -> VQGANConfig:
    return SMALL_VQGAN


def _guide(seed: int) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(SMALL_GUIDE).eval().requires_grad_(False)


@pytest.fixture
def small_guide() -> CLIP:
    return _guide(0)


@pytest.fixture
def small_guide_b() -> CLIP:
    """A second, independently initialised guide, for ensembles."""
    return _guide(1)


@pytest.fixture
def small_vqgan() -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(SMALL_VQGAN).eval().requires_grad_(False)


def _no_network(request, timeout=None):
    raise AssertionError(f"test touched the network: {getattr(request, 'full_url', request)}")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test: no network, and a private weights cache under its tmp path."""
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
