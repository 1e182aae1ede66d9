"""benchmarks/peer.py writes its random weights in the peer's formats (taming's .ckpt + YAML,
OpenAI's CLIP as a TorchScript archive of tensors); vqclip's own loaders read them back
strictly, which proves the names are taming's and OpenAI's. Tiny models: fast."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from vqclip.clip.io import load_clip
from vqclip.vqgan.io import load_vqgan

PEER = Path(__file__).resolve().parents[1] / "benchmarks" / "peer.py"


def _peer_module():
    if not PEER.is_file():
        pytest.skip("benchmarks/peer.py is not in this checkout")
    spec = importlib.util.spec_from_file_location("peer_benchmark", PEER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load: OpenAI's format
def test_written_weights_load_strictly(tmp_path: Path, tiny_vqgan, tiny_clip) -> None:
    peer = _peer_module()
    vqgan, clip = tiny_vqgan, tiny_clip
    paths = peer.write_weights(tmp_path, vqgan, clip)

    loaded = load_vqgan(paths["ckpt"], paths["yaml"])  # strict: every name must match
    for key, value in vqgan.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    # The archive is what clip.load reads: its state_dict() in OpenAI's names, fp16.
    archive = torch.jit.load(str(paths["clip"]), map_location="cpu")
    state_dict = archive.state_dict()
    assert set(state_dict) == set(clip.state_dict())
    assert {v.dtype for v in state_dict.values()} == {torch.float16}
    plain = tmp_path / "clip_state_dict.pt"
    torch.save(dict(state_dict), plain)
    reloaded = load_clip(plain, quick_gelu=True)  # strict, config inferred from the shapes
    assert reloaded.config.vision_width == clip.config.vision_width
    for key, value in clip.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value.half().float()), key


def test_step_times_from_counter_stamps() -> None:
    peer = _peer_module()
    # counter n arrives after step n-1; counter 0 before any step; 3 and 5 skipped by tqdm
    stamps = {0: 10.0, 1: 14.0, 2: 15.0, 4: 17.2, 6: 19.6}
    assert peer.step_times(stamps, warmup=1) == pytest.approx([1.0, 1.1, 1.1, 1.2, 1.2])
    assert peer.step_times(stamps, warmup=2) == pytest.approx([1.1, 1.1, 1.2, 1.2])
    assert peer.parse_size("256x128/32") == ((256, 128), 32)
