"""Hub files through huggingface_hub: the shared cache (HF_HUB_CACHE / HF_HOME), offline use
of a copy another library cached, HF_TOKEN, pinned commits and pinned hashes. The "Hub" is a
real HTTP server on 127.0.0.1 that answers like one (HF_ENDPOINT points at it)."""

from __future__ import annotations

import hashlib

import pytest

from vqclip.errors import WeightsNotFoundError
from vqclip.weights import cache, hub, registry
from vqclip.weights.download import Retry, ensure_files
from vqclip.weights.registry import FileSpec, Host, WeightSpec
from weights_server import PAYLOAD, PAYLOAD_SHA, FaultyServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FAST = Retry(attempts=2, backoff_s=0.01, timeout_s=2.0)


@pytest.fixture
def server(monkeypatch):
    s = FaultyServer()
    monkeypatch.setenv("HF_ENDPOINT", s.base)
    yield s
    s.close()


def hand_built_cache(root, repo: str, filename: str, data: bytes, revision="main"):
    """The layout huggingface_hub writes: blobs/<sha256>, snapshots/<commit>/<file> -> blob,
    refs/<branch> holding the commit."""
    folder = root / f"models--{repo.replace('/', '--')}"
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    snapshot = folder / "snapshots" / COMMIT / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(blob)
    if revision == "main":
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(COMMIT)
    return snapshot


def clip_spec(sha256=None, revision="main", extra=()):
    host = Host(hf_repo="org/clip", hf_filename="open_clip_model.safetensors", revision=revision)
    f = FileSpec("checkpoint", "c.safetensors", hosts=(host, *extra), sha256=sha256,
                 sha256_note="" if sha256 else "test")  # fmt: skip
    return WeightSpec("tiny_clip", "clip", (f,), "MIT", "test", preset="ViT-B-32",
                      input_size=224, mean=(0, 0, 0), std=(1, 1, 1))  # fmt: skip


@pytest.mark.parametrize("where", ["HF_HUB_CACHE", "HF_HOME"])
def test_a_clip_cached_by_open_clip_is_used_offline_without_a_download(
    monkeypatch, tmp_path, where
):
    root = tmp_path / "elsewhere"
    if where == "HF_HOME":
        monkeypatch.delenv("HF_HUB_CACHE")
        monkeypatch.setenv("HF_HOME", str(root))
        root = root / "hub"
    else:
        monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = registry.get_spec("ViT-B/32")
    host = spec.file("checkpoint").sources[0]
    snapshot = hand_built_cache(root, host.hf_repo, host.hf_filename, PAYLOAD)
    assert cache.is_cached(spec)
    assert ensure_files(spec)["checkpoint"] == snapshot
    assert not cache.model_dir(spec).exists()  # nothing copied into vqclip's own cache


def test_without_the_file_offline_says_so_and_names_the_hub_url(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as err:
        ensure_files(registry.get_spec("ViT-B/32"))
    assert "HF_HUB_OFFLINE=1" in str(err.value)
    assert "timm/vit_base_patch32_clip_224.openai/resolve/main/" in str(err.value)


def test_a_hub_file_is_fetched_into_the_shared_cache_with_the_token(server, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    path = "/org/clip/resolve/main/open_clip_model.safetensors"
    server.serve(path, PAYLOAD, hub_commit=COMMIT)
    spec = clip_spec(sha256=PAYLOAD_SHA)
    got = ensure_files(spec, progress=False, retry=FAST)["checkpoint"]
    assert got.read_bytes() == PAYLOAD
    assert got.is_relative_to(tmp_path / "hf-hub" / "models--org--clip" / "snapshots" / COMMIT)
    assert hub.blob_sha256(got) == PAYLOAD_SHA
    assert {s.authorization for s in server.requests(path)} == {"Bearer hf_secret"}
    asked = len(server.log)
    assert ensure_files(spec, progress=False)["checkpoint"] == got
    assert len(server.log) == asked  # found in the cache: not asked again


def test_a_pinned_commit_is_asked_for_by_its_hash(server):
    server.serve(f"/org/clip/resolve/{COMMIT}/open_clip_model.safetensors", PAYLOAD,
                 hub_commit=COMMIT)  # fmt: skip
    got = ensure_files(clip_spec(revision=COMMIT), progress=False, retry=FAST)["checkpoint"]
    assert got.read_bytes() == PAYLOAD


def test_a_hub_copy_that_is_not_the_pinned_file_is_passed_over(server, tmp_path):
    other = bytes(reversed(PAYLOAD))
    hand_built_cache(tmp_path / "hf-hub", "org/clip", "open_clip_model.safetensors", other)
    spec = clip_spec(sha256=PAYLOAD_SHA)
    assert not cache.is_cached(spec)
    # the Hub now serves that wrong file too: the next host, a direct URL, delivers the right one
    server.serve("/org/clip/resolve/main/open_clip_model.safetensors", other, hub_commit=COMMIT)
    direct = Host(url=server.serve("/direct.safetensors", PAYLOAD))
    spec = clip_spec(sha256=PAYLOAD_SHA, extra=(direct,))
    got = ensure_files(spec, progress=False, retry=FAST)["checkpoint"]
    assert got == cache.own_path(spec, spec.file("checkpoint")) and got.read_bytes() == PAYLOAD


def test_a_missing_hub_repository_is_a_clear_failure(server):
    with pytest.raises(WeightsNotFoundError, match="org/clip"):
        ensure_files(clip_spec(), progress=False, retry=FAST)


def test_a_machine_that_cannot_resolve_the_hub_is_told_at_once(monkeypatch):
    """Without DNS the Hub client would retry for about 25 s a host; the lookup is asked first."""
    import socket

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(hub.HubFetchFailed, match=r"cannot resolve huggingface\.co.*no network"):
        hub.fetch(Host(hf_repo="org/clip", hf_filename="open_clip_model.safetensors"))
    with pytest.raises(WeightsNotFoundError, match=r"cannot resolve huggingface\.co"):
        ensure_files(clip_spec(), progress=False, retry=FAST)
