"""The registry of pretrained weights vqclip knows: name -> where to get its files, how to use it.

VQGAN sources are the taming-transformers links (and mirrors) that nerdyrodent's download_models.sh
and Crowson's notebook use; file names match those scripts, so files users already have can be
copied into the cache as they are. CLIP sources are OpenCLIP's Hugging Face safetensors copies,
which hold OpenAI/OpenCLIP state-dict names (not TorchScript).

No sha256 is pinned yet: none of these sources publishes one that could be confirmed when this
file was written (see each file's `sha256_note`). The downloader records the hash of every
download beside it and checks it on later loads (trust on first use).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from vqclip.errors import ConfigError

KINDS = ("vqgan", "clip")
# Names the converter writes into a model's cache folder; a download must never use them.
CONVERTED_FILENAMES = ("model.safetensors", "model.json")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileSpec:
    """One file of a model: a direct `url`, or a Hugging Face `hf_repo` + `hf_filename`."""

    role: str
    filename: str
    url: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    revision: str = "main"
    mirrors: tuple[str, ...] = ()  # direct URLs tried in order when the primary source fails
    sha256: str | None = None
    sha256_note: str = ""
    size_bytes: int | None = None  # approximate; None where no source states it

    def __post_init__(self) -> None:
        if not self.role:
            raise ConfigError("FileSpec.role must not be empty")
        name = self.filename
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ConfigError(f"FileSpec.filename must be a plain file name, got {name!r}")
        if name in CONVERTED_FILENAMES or name.endswith(".sha256"):
            raise ConfigError(f"FileSpec.filename {name!r} is reserved for vqclip's own files")
        has_hf = self.hf_repo is not None or self.hf_filename is not None
        if (self.url is None) == (not has_hf):
            raise ConfigError(
                f"FileSpec {name!r}: give exactly one source, url or hf_repo + hf_filename"
            )
        if has_hf and not (self.hf_repo and self.hf_filename):
            raise ConfigError(f"FileSpec {name!r}: hf_repo and hf_filename go together")
        if self.sha256 is not None and not _SHA256.fullmatch(self.sha256):
            raise ConfigError(f"FileSpec.sha256 must be 64 lowercase hex, got {self.sha256!r}")
        if self.sha256 is None and not self.sha256_note:
            raise ConfigError(f"FileSpec {name!r}: say in sha256_note why no sha256 is pinned")
        if self.size_bytes is not None and self.size_bytes <= 0:
            raise ConfigError(f"FileSpec.size_bytes must be positive, got {self.size_bytes}")


@dataclass(frozen=True)
class WeightSpec:
    """A pretrained model: its files, licence and, for CLIP, the preprocessing it expects."""

    name: str
    kind: str
    files: tuple[FileSpec, ...]
    licence: str
    description: str
    aliases: tuple[str, ...] = ()
    # CLIP only: open_clip architecture name, activation, and input preprocessing.
    preset: str | None = None
    quick_gelu: bool = False
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", self.name):
            raise ConfigError(f"WeightSpec.name must be lowercase snake_case, got {self.name!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"WeightSpec.kind must be one of {KINDS}, got {self.kind!r}")
        if not self.licence:
            raise ConfigError(f"WeightSpec {self.name}: licence must not be empty")
        roles = [f.role for f in self.files]
        if len(set(roles)) != len(roles):
            raise ConfigError(f"WeightSpec {self.name}: file roles repeat: {roles}")
        needed = {"checkpoint", "config"} if self.kind == "vqgan" else {"checkpoint"}
        if not needed <= set(roles):
            raise ConfigError(f"WeightSpec {self.name}: needs roles {sorted(needed)}, got {roles}")
        clip_fields = (self.preset, self.input_size, self.mean, self.std)
        if self.kind == "vqgan" and (any(v is not None for v in clip_fields) or self.quick_gelu):
            raise ConfigError(f"WeightSpec {self.name}: CLIP fields set on a VQGAN")
        if self.kind == "clip":
            if not self.preset:
                raise ConfigError(f"WeightSpec {self.name}: preset is required for CLIP")
            if self.input_size is None or self.input_size <= 0:
                raise ConfigError(f"WeightSpec {self.name}: bad input_size {self.input_size!r}")
            for label, v in (("mean", self.mean), ("std", self.std)):
                if v is None or len(v) != 3:
                    raise ConfigError(f"WeightSpec {self.name}: {label} needs 3 values, got {v!r}")
            if min(self.std) <= 0:
                raise ConfigError(f"WeightSpec {self.name}: std must be positive, got {self.std}")

    def file(self, role: str) -> FileSpec:
        for f in self.files:
            if f.role == role:
                return f
        raise KeyError(f"{self.name} has no {role!r} file")

    @property
    def size_bytes(self) -> int | None:
        """Approximate download size, or None if a file's size is unknown."""
        sizes = [f.size_bytes for f in self.files]
        return None if None in sizes else sum(sizes)


def _heibox(folder: str, path: str) -> str:
    # taming's Seafile shares: a folder link plus the file's path inside it.
    return f"https://heibox.uni-heidelberg.de/d/{folder}/files/?p={path}&dl=1"


def _nerdy_mirror(filename: str) -> str:
    return f"http://mirror.io.community/blob/vqgan/{filename}"


_NO_HASH_DIRECT = (
    "no sha256 published by the host; the hash of the first download is recorded beside the file"
)
_NO_HASH_HF = (
    "Hugging Face lists the file's LFS sha256 on its page, but it could not be confirmed offline "
    "when this registry was written; the hash of the first download is recorded beside the file"
)


def _vqgan(
    name: str,
    stem: str,
    ckpt: str,
    yaml: str,
    *,
    ckpt_mirrors: tuple[str, ...] = (),
    yaml_mirrors: tuple[str, ...] = (),
    size_bytes: int | None,
    licence: str,
    description: str,
    aliases: tuple[str, ...] = (),
) -> WeightSpec:
    files = (
        FileSpec(
            "config",
            f"{stem}.yaml",
            url=yaml,
            mirrors=yaml_mirrors,
            size_bytes=2_000,
            sha256_note=_NO_HASH_DIRECT,
        ),
        FileSpec(
            "checkpoint",
            f"{stem}.ckpt",
            url=ckpt,
            mirrors=ckpt_mirrors,
            size_bytes=size_bytes,
            sha256_note=_NO_HASH_DIRECT,
        ),
    )
    return WeightSpec(name, "vqgan", files, licence, description, aliases)


def _clip(
    name: str,
    preset: str,
    hf_repo: str,
    hf_filename: str,
    *,
    quick_gelu: bool,
    input_size: int,
    size_bytes: int,
    description: str,
    aliases: tuple[str, ...],
    licence: str,
    openai_pt_sha256: str | None = None,
    mean: tuple[float, float, float] = OPENAI_MEAN,
    std: tuple[float, float, float] = OPENAI_STD,
) -> WeightSpec:
    note = _NO_HASH_HF
    if openai_pt_sha256:
        note += (
            f"; OpenAI's own URL embeds sha256 {openai_pt_sha256}, but that is of the TorchScript "
            ".pt file, which vqclip does not load"
        )
    ckpt = FileSpec(
        "checkpoint",
        f"{name}.safetensors",
        hf_repo=hf_repo,
        hf_filename=hf_filename,
        size_bytes=size_bytes,
        sha256_note=note,
    )
    return WeightSpec(
        name,
        "clip",
        (ckpt,),
        licence,
        description,
        aliases,
        preset=preset,
        quick_gelu=quick_gelu,
        input_size=input_size,
        mean=mean,
        std=std,
    )


_TAMING = "MIT (taming-transformers)"
_OPENAI = "MIT (OpenAI CLIP)"
_OPENCLIP = "MIT (OpenCLIP)"
_COMMUNITY = "unknown (community fine-tune on WikiArt)"
_IMAGENET_1024 = "8088892a516d4e3baf92"
_IMAGENET_16384 = "a7530b09fed84f80a887"
_GUMBEL_8192 = "2e5662443a6b4307b470"
_SFLCKR = "73487ab6e5314cb5adba"
_CKPT = "%2Fckpts%2Flast.ckpt"
_YAML = "%2Fconfigs%2Fmodel.yaml"

_SPECS = (
    _vqgan(
        "vqgan_imagenet_f16_1024", "vqgan_imagenet_f16_1024",
        _heibox(_IMAGENET_1024, _CKPT), _heibox(_IMAGENET_1024, _YAML),
        ckpt_mirrors=(_nerdy_mirror("vqgan_imagenet_f16_1024.ckpt"),),
        yaml_mirrors=(_nerdy_mirror("vqgan_imagenet_f16_1024.yaml"),),
        size_bytes=958_000_000, licence=_TAMING,
        description="VQGAN ImageNet f16, 1024 codes (Crowson's notebook default)",
        aliases=("imagenet_1024", "imagenet_f16_1024"),
    ),
    _vqgan(
        "vqgan_imagenet_f16_16384", "vqgan_imagenet_f16_16384",
        _heibox(_IMAGENET_16384, _CKPT), _heibox(_IMAGENET_16384, _YAML),
        ckpt_mirrors=(
            "https://heibox.uni-heidelberg.de/f/867b05fc8c4841768640/?dl=1",
            _nerdy_mirror("vqgan_imagenet_f16_16384.ckpt"),
        ),
        yaml_mirrors=(
            "https://heibox.uni-heidelberg.de/f/274fb24ed38341bfa753/?dl=1",
            _nerdy_mirror("vqgan_imagenet_f16_16384.yaml"),
        ),
        size_bytes=980_000_000, licence=_TAMING,
        description="VQGAN ImageNet f16, 16384 codes (nerdyrodent's default)",
        aliases=("imagenet_16384", "imagenet_f16_16384"),
    ),
    _vqgan(
        "vqgan_gumbel_f8_8192", "vqgan_gumbel_f8_8192",
        _heibox(_GUMBEL_8192, _CKPT), _heibox(_GUMBEL_8192, _YAML),
        size_bytes=376_000_000, licence=_TAMING,
        description="Gumbel VQGAN OpenImages f8, 8192 codes",
        aliases=("gumbel_8192", "vqgan_openimages_f8_8192", "openimages_f8_8192"),
    ),
    _vqgan(
        "vqgan_wikiart_f16_16384", "wikiart_16384",
        "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.ckpt",
        "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.yaml",
        ckpt_mirrors=(_nerdy_mirror("wikiart_16384.ckpt"),),
        yaml_mirrors=(_nerdy_mirror("wikiart_16384.yaml"),),
        size_bytes=1_000_000_000,
        licence=_COMMUNITY,
        description="VQGAN f16, 16384 codes, trained on WikiArt paintings",
        aliases=("wikiart_16384",),
    ),
    _vqgan(
        "vqgan_wikiart_f16_1024", "wikiart_1024",
        _nerdy_mirror("wikiart.ckpt"), _nerdy_mirror("wikiart.yaml"),
        ckpt_mirrors=(
            "http://batbot.tv/ai/models/vqgan/WikiArt_augmented_Steps_7mil_finetuned_1mil.ckpt",
        ),
        yaml_mirrors=(
            "http://batbot.tv/ai/models/vqgan/WikiArt_augmented_Steps_7mil_finetuned_1mil.yaml",
        ),
        size_bytes=958_000_000,
        licence=_COMMUNITY,
        description="VQGAN f16, 1024 codes, ImageNet model fine-tuned on WikiArt",
        aliases=("wikiart_1024", "wikiart"),
    ),
    _vqgan(
        "vqgan_coco", "coco",
        "https://dl.nmkd.de/ai/clip/coco/coco.ckpt", "https://dl.nmkd.de/ai/clip/coco/coco.yaml",
        size_bytes=8_400_000_000, licence=_TAMING,
        description="taming COCO-Stuff transformer; its first stage is the VQGAN (large file)",
        aliases=("coco",),
    ),
    _vqgan(
        "vqgan_faceshq", "faceshq",
        "https://app.koofr.net/content/links/a04deec9-0c59-4673-8b37-3d696fe63a5d/files/get/"
        "last.ckpt?path=%2F2020-11-13T21-41-45_faceshq_transformer%2Fcheckpoints%2Flast.ckpt",
        "https://drive.google.com/uc?export=download&id=1fHwGx_hnBtC8nsq7hesJvs-Klv-P0gzT",
        size_bytes=None, licence=_TAMING,
        description="taming FacesHQ transformer; its first stage is the VQGAN",
        aliases=("faceshq",),
    ),
    _vqgan(
        "vqgan_sflckr", "sflckr",
        _heibox(_SFLCKR, "%2Fcheckpoints%2Flast.ckpt"),
        _heibox(_SFLCKR, "%2Fconfigs%2F2020-11-09T13-31-51-project.yaml"),
        size_bytes=None, licence=_TAMING,
        description="taming S-FLCKR landscape transformer; its first stage is the VQGAN",
        aliases=("sflckr", "s_flckr"),
    ),
    _clip(
        "clip_vit_b32_openai", "ViT-B-32",
        "timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors",
        licence=_OPENAI, quick_gelu=True, input_size=224, size_bytes=605_000_000,
        description="OpenAI CLIP ViT-B/32 (the usual VQGAN+CLIP default)",
        aliases=("ViT-B/32", "ViT-B-32/openai"),
        openai_pt_sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    ),
    _clip(
        "clip_vit_b16_openai", "ViT-B-16",
        "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors",
        licence=_OPENAI, quick_gelu=True, input_size=224, size_bytes=599_000_000,
        description="OpenAI CLIP ViT-B/16",
        aliases=("ViT-B/16", "ViT-B-16/openai"),
        openai_pt_sha256="5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    ),
    _clip(
        "clip_vit_l14_openai", "ViT-L-14",
        "timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors",
        licence=_OPENAI, quick_gelu=True, input_size=224, size_bytes=1_710_000_000,
        description="OpenAI CLIP ViT-L/14",
        aliases=("ViT-L/14", "ViT-L-14/openai"),
        openai_pt_sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    ),
    _clip(
        "clip_vit_l14_336_openai", "ViT-L-14-336",
        "timm/vit_large_patch14_clip_336.openai", "open_clip_model.safetensors",
        licence=_OPENAI, quick_gelu=True, input_size=336, size_bytes=1_710_000_000,
        description="OpenAI CLIP ViT-L/14 at 336 px",
        aliases=("ViT-L/14@336px", "ViT-L-14-336", "ViT-L-14-336/openai"),
        openai_pt_sha256="3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
    ),
    _clip(
        "clip_vit_b32_laion2b", "ViT-B-32",
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_model.safetensors",
        licence=_OPENCLIP, quick_gelu=False, input_size=224, size_bytes=605_000_000,
        description="OpenCLIP ViT-B/32 trained on LAION-2B (laion2b_s34b_b79k)",
        aliases=("ViT-B-32/laion2b_s34b_b79k", "laion2b_s34b_b79k"),
    ),
    # open_clip lists INCEPTION mean/std (0.5) for this one checkpoint, not OpenAI's; and its
    # repo names the safetensors copy open_clip_pytorch_model.safetensors.
    _clip(
        "clip_vit_l14_laion2b", "ViT-L-14",
        "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", "open_clip_pytorch_model.safetensors",
        licence=_OPENCLIP, quick_gelu=False, input_size=224, size_bytes=1_710_000_000,
        description="OpenCLIP ViT-L/14 trained on LAION-2B (laion2b_s32b_b82k)",
        aliases=("ViT-L-14/laion2b_s32b_b82k", "laion2b_s32b_b82k"),
        mean=INCEPTION_MEAN, std=INCEPTION_STD,
    ),
)  # fmt: skip


def normalize_name(name: str) -> str:
    """Fold case and separators so "ViT-B/32", "vit_b_32" and "VIT-B-32" are the same key."""
    return re.sub(r"[\s\-_/@.:]+", "_", name.strip().lower()).strip("_")


def _index(specs: tuple[WeightSpec, ...]) -> dict[str, WeightSpec]:
    index: dict[str, WeightSpec] = {}
    for spec in specs:
        for key in (spec.name, *spec.aliases):
            k = normalize_name(key)
            if k in index:
                raise ConfigError(
                    f"registry key {key!r} is used twice ({index[k].name}, {spec.name})"
                )
            index[k] = spec
    return index


REGISTRY: MappingProxyType[str, WeightSpec] = MappingProxyType({s.name: s for s in _SPECS})
_BY_KEY = _index(_SPECS)


def find_spec(name: str) -> WeightSpec | None:
    """The spec registered under `name` or one of its aliases (case and separators ignored)."""
    return _BY_KEY.get(normalize_name(name))


def suggest(name: str, n: int = 3) -> list[str]:
    """Names of the registry models whose name or an alias looks like `name`, best first."""
    close = difflib.get_close_matches(normalize_name(name), list(_BY_KEY), n=4 * n, cutoff=0.5)
    return list(dict.fromkeys(_BY_KEY[c].name for c in close))[:n]


def get_spec(name: str, kind: str | None = None) -> WeightSpec:
    """Look `name` up; ConfigError with close matches if it is unknown, or if of another kind."""
    spec = find_spec(name)
    if spec is None:
        close = suggest(name)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown model {name!r}.{hint} Run `vqclip models list` to see the known models, "
            "or pass the path of a checkpoint file."
        )
    if kind is not None and spec.kind != kind:
        raise ConfigError(f"{name!r} is a {spec.kind.upper()} model, not a {kind.upper()} one")
    return spec


def list_specs(kind: str | None = None) -> list[WeightSpec]:
    return [s for s in _SPECS if kind is None or s.kind == kind]


# Model pairs: one name for a VQGAN + CLIP combination (`vqclip generate --model NAME`), with
# the settings that suit it where they differ from the general defaults.


@dataclass(frozen=True)
class ModelPair:
    vqgan: str  # registry name or path
    clips: tuple[str, ...]
    defaults: tuple[tuple[str, object], ...] = ()  # (GenerateConfig field, value) pairs


# Weights shipped inside the package (the toy pair, `vqclip.toy`), known by name rather than by
# path, so settings that name them still work after the package moves.
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "toy" / "weights"
PACKAGED = {
    "toy_vqgan": "toy_vqgan.safetensors",
    "toy_clip_a": "toy_clip_a.safetensors",
    "toy_clip_b": "toy_clip_b.safetensors",
}

PAIRS: dict[str, ModelPair] = {
    "default": ModelPair("vqgan_imagenet_f16_16384", ("clip_vit_b32_openai",)),
    "imagenet1024": ModelPair("vqgan_imagenet_f16_1024", ("clip_vit_b32_openai",)),
    "gumbel": ModelPair("vqgan_gumbel_f8_8192", ("clip_vit_b32_openai",)),
    "wikiart": ModelPair("vqgan_wikiart_f16_16384", ("clip_vit_b32_openai",)),
    "ensemble": ModelPair(
        "vqgan_imagenet_f16_16384", ("clip_vit_b32_openai", "clip_vit_b16_openai")
    ),
    # The offline pair trained on the toy world, shipped in the package.
    "toy": ModelPair(
        "toy_vqgan",
        ("toy_clip_a", "toy_clip_b"),
        (("size", (64, 64)), ("iterations", 100), ("cut_method", "overview"), ("cutn", 16)),
    ),
}


def resolve_pair(name: str) -> ModelPair:
    """The model pair called `name`; ConfigError listing the pairs if unknown."""
    if name in PAIRS:
        return PAIRS[name]
    close = difflib.get_close_matches(name, list(PAIRS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown model pair {name!r}; pairs: {', '.join(PAIRS)}.{hint}")
