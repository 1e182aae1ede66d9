"""Registry, cache and name resolution; the downloader's own tests are in
test_weights_download.py (a real local HTTP server) and test_weights_hub.py."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from vqclip.errors import ConfigError
from vqclip.weights import cache, download, fetch, registry, resolve
from vqclip.weights.registry import FileSpec, Host, WeightSpec

# helper functions


def tiny_spec():
    ckpt = FileSpec("checkpoint", "tiny.ckpt", url="https://example.org/tiny.ckpt",
                    sha256_note="test file")  # fmt: skip
    config = FileSpec("config", "tiny.yaml", url="https://example.org/tiny.yaml", sha256_note="x")
    return WeightSpec("tiny_vqgan", "vqgan", (config, ckpt), "MIT", "test model")


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


DEAD_HOSTS = ("mirror.io.community", "eaidata.bmk.sh")


def test_no_dead_hosts_and_every_host_says_what_is_known_of_it():
    for spec in registry.list_specs():
        for f in spec.files:
            for host in f.sources:
                assert not any(d in download.host_url(host) for d in DEAD_HOSTS), spec.name
                assert host.note, (spec.name, f.role, host.label)


def test_pinned_hashes_name_their_sources_and_hub_mirrors_are_at_commits():
    pinned = {s.name for s in registry.list_specs() if all(f.sha256 for f in s.files)}
    assert {"vqgan_imagenet_f16_16384", "vqgan_gumbel_f8_8192", "vqgan_wikiart_f16_16384",
            "vqgan_coco", "vqgan_sflckr"} <= pinned  # fmt: skip
    for spec in registry.list_specs("vqgan"):
        for f in spec.files:
            if f.sha256:
                assert "independent sources" in f.sha256_note, spec.name
            hub = [h for h in f.sources if h.is_hub]
            # a Hub mirror of an unpinned taming file must sit at a commit: its bytes cannot
            # change (aMUSEd's VQ model comes from its authors' own repository, at main)
            taming = spec.preset is None
            assert f.sha256 or not taming or all(h.pinned_commit for h in hub), (spec.name, f.role)


def test_koofr_gets_a_referer_and_the_7mil_wikiart_is_its_own_model():
    faces = registry.get_spec("faceshq").file("checkpoint").sources
    koofr = [h for h in faces if h.label == "app.koofr.net"]
    assert koofr and koofr[0].referer.startswith("https://app.koofr.net/links/")
    assert registry.find_spec("vqgan_wikiart_f16_1024") is None
    batbot = [h for s in registry.list_specs() for f in s.files for h in f.sources
              if h.label == "batbot.tv"]  # fmt: skip
    assert batbot and all(
        s.name == "vqgan_wikiart_7mil"
        for s in registry.list_specs()
        for f in s.files
        for h in f.sources
        if h.label == "batbot.tv"
    )


def test_hosts_are_validated():
    with pytest.raises(ConfigError, match="exactly one source"):
        Host()
    with pytest.raises(ConfigError, match="referer"):
        Host(hf_repo="o/r", hf_filename="f", referer="https://x")
    assert Host(hf_repo="o/r", hf_filename="f", revision="a" * 40).label == "hf:o/r@aaaaaaa"
    assert not Host(hf_repo="o/r", hf_filename="f").pinned_commit
    f = FileSpec("checkpoint", "a.ckpt", url="https://a", mirrors=("https://b",),
                 hosts=(Host(url="https://c"),), sha256_note="x")  # fmt: skip
    assert [h.url for h in f.sources] == ["https://a", "https://b", "https://c"]


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
        ("wikiart", "vqgan_wikiart_f16_16384"),
        ("wikiart_7mil", "vqgan_wikiart_7mil"),
        ("boris/vqgan_f16_16384", "vqgan_f16_16384_dalle_mini"),
        ("coco", "vqgan_coco"),
        ("faceshq", "vqgan_faceshq"),
        ("sflckr", "vqgan_sflckr"),
    ],
)
def test_names_users_know_resolve(alias, name):
    assert registry.get_spec(alias).name == name


def test_clip_specs_carry_their_preprocessing(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT")
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
    import vqclip.clip as clip

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
    config = FileSpec("config", "a.yaml", url="https://a", sha256_note="x")
    with pytest.raises(ConfigError, match="a VQGAN's preset names its format"):
        WeightSpec("a", "vqgan", (ckpt, config), "MIT", "d", preset="ViT-B-32")
    with pytest.raises(ConfigError, match="a prior's preset names its format"):
        WeightSpec("a", "prior", (ckpt,), "MIT", "d", preset="taming")
    assert WeightSpec("a", "vqgan", (ckpt, config), "MIT", "d", preset="amused").preset


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
    monkeypatch.delenv("HF_ENDPOINT")
    assert download.hf_url("o/r", "w.safetensors") == (
        "https://huggingface.co/o/r/resolve/main/w.safetensors"
    )
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    url = download.hf_url("o/r", "w.safetensors", "refs/pr/1")
    assert url == "https://mirror.example/o/r/resolve/refs%2Fpr%2F1/w.safetensors"
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    hub = fetch.build_request(url, 0, None, None, download.hub_auth(url))
    assert hub.get_header("Authorization") == "Bearer hf_secret"
    assert "Authorization" not in hub.headers  # not forwarded to the CDN on redirect
    assert download.hub_auth("https://heibox.uni-heidelberg.de/f/x/?dl=1") == {}


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
    spec = registry.get_spec("vqgan_wikiart_7mil")  # no pinned hash: the placed files pass
    paths = place(spec)
    resolve.load_vqgan_by_name("wikiart_7mil")
    assert fake_models[-1] == ("vqgan", paths["checkpoint"], paths["config"], "cpu")

    weights, config = cache.converted_paths(spec)
    weights.write_bytes(b"converted")
    config.write_text("{}")
    resolve.load_vqgan_by_name("vqgan_wikiart_7mil", device="meta")
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
    (tmp_path / "faceshq").mkdir()  # e.g. a dataset folder
    paths = place(registry.get_spec("faceshq"))
    resolve.load_vqgan_by_name("faceshq")
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
