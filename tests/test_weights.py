"""Registry, cache, downloader and name resolution. The network is never touched: urlopen is
replaced by a fake server that serves bytes from memory (and fails the test if used unasked)."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from vqclip.errors import ChecksumError, ConfigError, WeightsNotFoundError
from vqclip.weights import cache, download, registry, resolve
from vqclip.weights.registry import FileSpec, WeightSpec

PAYLOAD = bytes(range(256)) * 40  # 10 kB, several read() chunks with a small chunk size
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


# helper functions


class FakeResponse:
    def __init__(self, body: bytes, headers: dict, fail_at: int | None, error, on_read):
        self._body = io.BytesIO(body)
        self.headers = headers
        self._fail_at = fail_at
        self._error = error
        self.on_read = on_read

    def read(self, n: int) -> bytes:
        if self.on_read is not None:
            self.on_read()
        if self._fail_at is not None and self._body.tell() >= self._fail_at:
            raise self._error
        return self._body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeServer:
    """Stands in for urllib.request.urlopen; records every request it gets."""

    def __init__(self):
        self.routes: dict[str, dict] = {}
        self.requests: list[urllib.request.Request] = []
        self.on_read = None  # called before every read(), to look at the disk mid-download

    def serve(self, url, body=PAYLOAD, *, headers=None, length=None, fail_at=None, error=None):
        size = len(body) if length is None else length
        hdrs = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        hdrs.update(headers or {})
        self.routes[url] = dict(body=body, headers=hdrs, fail_at=fail_at, error=error)

    def __call__(self, request, timeout=None):
        self.requests.append(request)
        route = self.routes.get(request.full_url)
        if route is None:
            raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)
        if isinstance(route["error"], urllib.error.URLError):
            raise route["error"]
        error = route["error"] or ConnectionResetError("reset by peer")
        return FakeResponse(route["body"], route["headers"], route["fail_at"], error, self.on_read)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(download, "_CHUNK", 1024)


@pytest.fixture
def server(monkeypatch):
    fake = FakeServer()
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    return fake


def tiny_spec(sha256=None, mirrors=()):
    note = "" if sha256 else "test file"
    url = "https://example.org/tiny.ckpt"
    ckpt = FileSpec("checkpoint", "tiny.ckpt", url=url, mirrors=mirrors, sha256=sha256,
                    sha256_note=note)  # fmt: skip
    config = FileSpec("config", "tiny.yaml", url="https://example.org/tiny.yaml", sha256_note="x")
    return WeightSpec("tiny_vqgan", "vqgan", (config, ckpt), "MIT", "test model")


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# registry


def test_registry_names_and_aliases_are_unique():
    keys = [registry.normalize_name(k) for s in registry.list_specs() for k in (s.name, *s.aliases)]
    assert len(keys) == len(set(keys))
    assert list(registry.REGISTRY) == [s.name for s in registry.list_specs()]


def test_every_spec_has_a_source_licence_and_hash_story():
    for spec in registry.list_specs():
        assert spec.licence and spec.description
        for f in spec.files:
            urls = download.source_urls(f)
            assert urls and all(u.startswith(("http://", "https://")) for u in urls), spec.name
            assert f.sha256 or f.sha256_note, (spec.name, f.role)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("ViT-B/32", "clip_vit_b32_openai"),
        ("vit-b-16", "clip_vit_b16_openai"),
        ("ViT-L/14", "clip_vit_l14_openai"),
        ("ViT-L/14@336px", "clip_vit_l14_336_openai"),
        ("ViT-B-32/laion2b_s34b_b79k", "clip_vit_b32_laion2b"),
        ("laion2b_s32b_b82k", "clip_vit_l14_laion2b"),
        ("vqgan_imagenet_f16_1024", "vqgan_imagenet_f16_1024"),
        ("VQGAN_IMAGENET_F16_16384", "vqgan_imagenet_f16_16384"),
        ("vqgan_openimages_f8_8192", "vqgan_gumbel_f8_8192"),
        ("wikiart_16384", "vqgan_wikiart_f16_16384"),
        ("wikiart_1024", "vqgan_wikiart_f16_1024"),
        ("coco", "vqgan_coco"),
        ("faceshq", "vqgan_faceshq"),
        ("sflckr", "vqgan_sflckr"),
    ],
)
def test_names_users_know_resolve(alias, name):
    assert registry.get_spec(alias).name == name


def test_clip_specs_carry_their_preprocessing():
    b32 = registry.get_spec("ViT-B/32")
    assert (b32.preset, b32.quick_gelu, b32.input_size) == ("ViT-B-32", True, 224)
    assert b32.mean == registry.OPENAI_MEAN and b32.std == registry.OPENAI_STD
    assert registry.get_spec("ViT-L/14@336px").input_size == 336
    assert registry.get_spec("clip_vit_b32_laion2b").quick_gelu is False
    assert download.source_urls(b32.file("checkpoint")) == [
        "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/"
        "open_clip_model.safetensors"
    ]


def test_clip_presets_exist_in_the_clip_module():
    clip = pytest.importorskip("vqclip.clip")
    for spec in registry.list_specs("clip"):
        assert clip.CLIP_PRESETS[spec.preset]["image_size"] == spec.input_size, spec.name
        config = clip.CLIPConfig(**resolve.clip_config_for(spec), quick_gelu=spec.quick_gelu)
        assert config.mean == spec.mean and config.std == spec.std


def test_specs_are_validated_on_construction():
    with pytest.raises(ConfigError, match="exactly one source"):
        FileSpec("checkpoint", "a.ckpt", sha256_note="x")
    with pytest.raises(ConfigError, match="exactly one source"):
        FileSpec("checkpoint", "a.ckpt", url="https://a", hf_repo="o/r", hf_filename="f")
    with pytest.raises(ConfigError, match="sha256"):
        FileSpec("checkpoint", "a.ckpt", url="https://a", sha256="abc")
    with pytest.raises(ConfigError, match="reserved"):
        FileSpec("checkpoint", "model.safetensors", url="https://a", sha256_note="x")
    ckpt = FileSpec("checkpoint", "a.ckpt", url="https://a", sha256_note="x")
    with pytest.raises(ConfigError, match="config"):
        WeightSpec("a", "vqgan", (ckpt,), "MIT", "d")
    with pytest.raises(ConfigError, match="kind"):
        WeightSpec("a", "gan", (ckpt,), "MIT", "d")
    with pytest.raises(ConfigError, match="preset"):
        WeightSpec("a", "clip", (ckpt,), "MIT", "d")


# cache


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "home"
    monkeypatch.delenv("VQCLIP_HOME")
    assert cache.cache_root() == tmp_path / "xdg" / "vqclip"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid per the XDG spec
    assert cache.cache_root() == Path.home() / ".cache" / "vqclip"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_root() == Path.home() / ".cache" / "vqclip"


def test_cached_paths_and_is_cached(tmp_path):
    spec = tiny_spec()
    paths = cache.cached_paths(spec)
    assert paths["checkpoint"] == tmp_path / "cache" / "tiny_vqgan" / "tiny.ckpt"
    assert not cache.is_cached(spec)
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert cache.is_cached(spec)


# download


def test_hf_url_and_token(monkeypatch):
    assert download.hf_url("o/r", "w.safetensors") == (
        "https://huggingface.co/o/r/resolve/main/w.safetensors"
    )
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    url = download.hf_url("o/r", "w.safetensors", "refs/pr/1")
    assert url == "https://mirror.example/o/r/resolve/refs%2Fpr%2F1/w.safetensors"
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    hub = download.build_request(url)
    assert hub.get_header("Authorization") == "Bearer hf_secret"
    assert "Authorization" not in hub.headers  # not forwarded to the CDN on redirect
    other = download.build_request("https://heibox.uni-heidelberg.de/f/x/?dl=1")
    assert other.get_header("Authorization") is None


def test_download_is_atomic_and_verifies_a_pinned_checksum(server):
    spec = tiny_spec(sha256=PAYLOAD_SHA)
    server.serve("https://example.org/tiny.ckpt")
    server.serve("https://example.org/tiny.yaml", b"model: {}\n")
    dest = cache.cached_paths(spec)["checkpoint"]
    seen_early = []
    server.on_read = lambda: seen_early.append(dest.exists())
    paths = download.ensure_files(spec, progress=False)
    assert paths["checkpoint"].read_bytes() == PAYLOAD
    assert seen_early and not any(seen_early)  # the final name appears only when complete
    assert cache.read_sidecar(dest) == PAYLOAD_SHA
    assert files_in(dest.parent) == [
        "tiny.ckpt",
        "tiny.ckpt.sha256",
        "tiny.yaml",
        "tiny.yaml.sha256",
    ]


def test_checksum_mismatch_deletes_the_file(server):
    spec = tiny_spec(sha256="0" * 64)
    server.serve("https://example.org/tiny.yaml", b"model: {}\n")
    server.serve("https://example.org/tiny.ckpt")
    with pytest.raises(ChecksumError) as err:
        download.ensure_files(spec, progress=False)
    message = str(err.value)
    assert (
        "0" * 64 in message
        and PAYLOAD_SHA in message
        and "https://example.org/tiny.ckpt" in message
    )
    assert "tiny.ckpt" not in files_in(cache.model_dir(spec))
    assert not any(n.endswith(".part") for n in files_in(cache.model_dir(spec)))


@pytest.mark.parametrize("error", [KeyboardInterrupt(), ConnectionResetError("reset")])
def test_interrupted_download_leaves_no_file(server, error):
    spec = tiny_spec()
    server.serve("https://example.org/tiny.yaml", b"model: {}\n")
    server.serve("https://example.org/tiny.ckpt", fail_at=3000, error=error)
    expected = KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else WeightsNotFoundError
    with pytest.raises(expected):
        download.ensure_files(spec, progress=False)
    assert files_in(cache.model_dir(spec)) == ["tiny.yaml", "tiny.yaml.sha256"]


def test_truncated_body_is_a_failed_download(server):
    spec = tiny_spec()
    server.serve("https://example.org/tiny.yaml", b"model: {}\n")
    server.serve("https://example.org/tiny.ckpt", length=len(PAYLOAD) + 1)
    with pytest.raises(WeightsNotFoundError, match="closed after"):
        download.ensure_files(spec, progress=False)
    assert "tiny.ckpt" not in files_in(cache.model_dir(spec))


@pytest.mark.parametrize("var", ["VQCLIP_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_names_path_url_and_command_without_network(server, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    spec = tiny_spec()
    with pytest.raises(WeightsNotFoundError) as err:
        download.ensure_files(spec, progress=False)
    message = str(err.value)
    assert str(cache.cached_paths(spec)["checkpoint"]) in message
    assert "https://example.org/tiny.ckpt" in message and "https://example.org/tiny.yaml" in message
    assert "vqclip models download tiny_vqgan" in message and var in message
    assert server.requests == []


def test_network_error_gives_the_same_clear_error(server):
    spec = tiny_spec()
    server.serve("https://example.org/tiny.yaml", b"model: {}\n")
    server.serve("https://example.org/tiny.ckpt", error=urllib.error.URLError("no route to host"))
    with pytest.raises(WeightsNotFoundError) as err:
        download.ensure_files(spec, progress=False)
    message = str(err.value)
    assert "no route to host" in message
    assert str(cache.cached_paths(spec)["checkpoint"]) in message
    assert "https://example.org/tiny.ckpt" in message


def test_mirror_is_used_when_the_primary_fails(server):
    spec = tiny_spec(mirrors=("https://mirror.example/tiny.ckpt",))
    server.serve("https://example.org/tiny.yaml", b"model: {}\n")
    html = {"Content-Type": "text/html; charset=utf-8"}
    server.serve("https://example.org/tiny.ckpt", b"<html>moved</html>", headers=html)
    server.serve("https://mirror.example/tiny.ckpt")
    paths = download.ensure_files(spec, progress=False)
    assert paths["checkpoint"].read_bytes() == PAYLOAD
    assert [r.full_url for r in server.requests][-2:] == [
        "https://example.org/tiny.ckpt",
        "https://mirror.example/tiny.ckpt",
    ]


def test_cached_files_are_trusted_then_checked_after_a_change(server):
    spec = tiny_spec()
    server.serve("https://example.org/tiny.yaml", b"model: {}\n")
    server.serve("https://example.org/tiny.ckpt")
    paths = download.ensure_files(spec, progress=False)
    fetched = len(server.requests)
    assert download.ensure_files(spec, progress=False) == paths
    assert len(server.requests) == fetched  # cached: no network

    ckpt = paths["checkpoint"]
    ckpt.write_bytes(PAYLOAD[:-1] + b"!")  # corrupted in place
    later = cache.sidecar_path(ckpt).stat().st_mtime_ns + 10**9
    os.utime(ckpt, ns=(later, later))
    with pytest.raises(ChecksumError, match="download tiny_vqgan --force"):
        download.ensure_files(spec, progress=False)


def test_hand_placed_file_is_checked_and_recorded_on_first_use(server):
    spec = tiny_spec(sha256=PAYLOAD_SHA)
    paths = cache.cached_paths(spec)
    paths["checkpoint"].parent.mkdir(parents=True)
    paths["checkpoint"].write_bytes(PAYLOAD)
    paths["config"].write_bytes(b"model: {}\n")
    download.ensure_files(spec, progress=False)
    assert server.requests == []
    assert cache.read_sidecar(paths["checkpoint"]) == PAYLOAD_SHA

    bad = tiny_spec(sha256="1" * 64)
    with pytest.raises(ChecksumError, match="published"):
        download.ensure_files(bad, progress=False)


def test_download_false_reports_missing_files(server):
    with pytest.raises(WeightsNotFoundError, match="downloading is turned off"):
        download.ensure_files(tiny_spec(), download=False)
    assert server.requests == []


# resolution


@pytest.fixture
def fake_models(monkeypatch):
    """Stand-ins for vqclip.vqgan / vqclip.clip that record how they were called."""
    calls = []
    vqgan = types.ModuleType("vqclip.vqgan")
    vqgan.load_vqgan = lambda ckpt, config=None, *, device="cpu": calls.append(
        ("vqgan", Path(ckpt), config and Path(config), device)
    )
    clip = types.ModuleType("vqclip.clip")
    clip.CLIP_PRESETS = {"ViT-B-32": {"image_size": 224}}
    clip.load_clip = lambda path, config=None, *, quick_gelu=None, device="cpu": calls.append(
        ("clip", Path(path), config, quick_gelu)
    )
    monkeypatch.setitem(sys.modules, "vqclip.vqgan", vqgan)
    monkeypatch.setitem(sys.modules, "vqclip.clip", clip)
    return calls


def place(spec: WeightSpec) -> dict[str, Path]:
    paths = cache.cached_paths(spec)
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"weights")
    return paths


def test_registry_vqgan_prefers_the_converted_copy(fake_models):
    spec = registry.get_spec("vqgan_imagenet_f16_1024")
    paths = place(spec)
    resolve.load_vqgan_by_name("imagenet_1024")
    assert fake_models[-1] == ("vqgan", paths["checkpoint"], paths["config"], "cpu")

    weights, config = cache.converted_paths(spec)
    weights.write_bytes(b"converted")
    config.write_text("{}")
    resolve.load_vqgan_by_name("vqgan_imagenet_f16_1024", device="meta")
    assert fake_models[-1] == ("vqgan", weights, None, "meta")


def test_vqgan_path_finds_its_yaml(fake_models, tmp_path):
    ckpt = tmp_path / "mine.ckpt"
    ckpt.write_bytes(b"w")
    with pytest.raises(ConfigError, match="--config"):
        resolve.load_vqgan_by_name(ckpt)
    (tmp_path / "mine.yaml").write_text("model: {}")
    resolve.load_vqgan_by_name(str(ckpt))
    assert fake_models[-1][1:3] == (ckpt, tmp_path / "mine.yaml")

    run = tmp_path / "2020-11-09T13-31-51_sflckr"
    (run / "checkpoints").mkdir(parents=True)
    (run / "configs").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"w")
    (run / "configs" / "2020-11-09T13-31-51-project.yaml").write_text("model: {}")
    resolve.load_vqgan_by_name(run / "checkpoints" / "last.ckpt")
    assert fake_models[-1][2] == run / "configs" / "2020-11-09T13-31-51-project.yaml"


def test_registry_name_wins_over_a_folder_of_that_name(fake_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "coco").mkdir()  # e.g. a dataset folder
    paths = place(registry.get_spec("coco"))
    resolve.load_vqgan_by_name("coco")
    assert fake_models[-1][1] == paths["checkpoint"]
    with pytest.raises(ConfigError, match="is a folder"):
        resolve.load_vqgan_by_name(tmp_path)


def test_unknown_or_wrong_kind_names_are_clear_errors(fake_models, tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve.load_vqgan_by_name("vqgan_imagenet_f16_1638")
    assert "vqgan_imagenet_f16_16384" in str(err.value) and "vqclip models list" in str(err.value)
    with pytest.raises(ConfigError, match="CLIP model, not a VQGAN"):
        resolve.load_vqgan_by_name("ViT-B/32")
    with pytest.raises(ConfigError, match="no such file"):
        resolve.load_clip_by_name(tmp_path / "missing.safetensors")
    assert fake_models == []


def test_registry_clip_loads_with_its_preset(fake_models):
    spec = registry.get_spec("ViT-B/32")
    paths = place(spec)
    resolve.load_clip_by_name("ViT-B/32")
    config = {"image_size": 224, "mean": registry.OPENAI_MEAN, "std": registry.OPENAI_STD}
    assert fake_models[-1] == ("clip", paths["checkpoint"], config, True)
    with pytest.raises(ConfigError, match="ViT-L-14"):
        resolve.load_clip_by_name("ViT-L/14", download=False)
