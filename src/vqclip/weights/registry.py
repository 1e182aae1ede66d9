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
import urllib.parse
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


_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Host:
    """One place a file can be fetched from: a direct `url`, or `hf_filename` in the Hugging
    Face Hub repository `hf_repo` at `revision` (a commit, or a branch such as "main")."""

    url: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    revision: str = "main"
    referer: str | None = None  # sent with a direct request, for hosts that refuse hotlinks
    note: str = ""  # what is known of this host, and where that was learned

    def __post_init__(self) -> None:
        has_hf = self.hf_repo is not None or self.hf_filename is not None
        if (self.url is None) == (not has_hf):
            raise ConfigError("Host: give exactly one source, url or hf_repo + hf_filename")
        if has_hf and not (self.hf_repo and self.hf_filename):
            raise ConfigError(f"Host {self.hf_repo!r}: hf_repo and hf_filename go together")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"Host.url must be http(s), got {self.url!r}")
        if has_hf and self.referer is not None:
            raise ConfigError("Host.referer is for direct URLs, not Hub files")
        if not self.revision:
            raise ConfigError("Host.revision must not be empty")

    @property
    def is_hub(self) -> bool:
        return self.hf_repo is not None

    @property
    def pinned_commit(self) -> bool:
        """True for a Hub file fetched at a fixed commit (its bytes cannot change)."""
        return self.is_hub and bool(_COMMIT.fullmatch(self.revision))

    @property
    def label(self) -> str:
        """Short name for tables: `hf:org/name@abc1234`, or the URL's host name."""
        if self.is_hub:
            rev = self.revision[:7] if self.pinned_commit else self.revision
            return f"hf:{self.hf_repo}@{rev}"
        return urllib.parse.urlsplit(self.url).hostname or self.url


@dataclass(frozen=True)
class FileSpec:
    """One file of a model and its hosts, tried in order (`sources`).

    Either `hosts`, or the older one-source form: a direct `url` or `hf_repo` + `hf_filename`
    (+ `revision`) with direct-URL `mirrors` after it; `hosts` are tried after those.
    """

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
    hosts: tuple[Host, ...] = ()

    def __post_init__(self) -> None:
        if not self.role:
            raise ConfigError("FileSpec.role must not be empty")
        name = self.filename
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ConfigError(f"FileSpec.filename must be a plain file name, got {name!r}")
        if name in CONVERTED_FILENAMES or name.endswith((".sha256", ".part", ".lock")):
            raise ConfigError(f"FileSpec.filename {name!r} is reserved for vqclip's own files")
        has_hf = self.hf_repo is not None or self.hf_filename is not None
        if (self.url is not None and has_hf) or (
            self.url is None and not has_hf and not self.hosts
        ):
            raise ConfigError(
                f"FileSpec {name!r}: give exactly one source, url or hf_repo + hf_filename "
                "(or a list of hosts)"
            )
        if has_hf and not (self.hf_repo and self.hf_filename):
            raise ConfigError(f"FileSpec {name!r}: hf_repo and hf_filename go together")
        if (self.url is None and not has_hf) and self.mirrors:
            raise ConfigError(f"FileSpec {name!r}: mirrors follow a url or hf_repo; use hosts")
        if self.sha256 is not None and not _SHA256.fullmatch(self.sha256):
            raise ConfigError(f"FileSpec.sha256 must be 64 lowercase hex, got {self.sha256!r}")
        if self.sha256 is None and not self.sha256_note:
            raise ConfigError(f"FileSpec {name!r}: say in sha256_note why no sha256 is pinned")
        if self.size_bytes is not None and self.size_bytes <= 0:
            raise ConfigError(f"FileSpec.size_bytes must be positive, got {self.size_bytes}")

    @property
    def sources(self) -> tuple[Host, ...]:
        """Every host of this file, in the order the downloader tries them."""
        first: tuple[Host, ...] = ()
        if self.url is not None:
            first = (Host(url=self.url),)
        elif self.hf_repo is not None:
            first = (Host(hf_repo=self.hf_repo, hf_filename=self.hf_filename,
                          revision=self.revision),)  # fmt: skip
        return (*first, *(Host(url=m) for m in self.mirrors), *self.hosts)


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


_NO_HASH_DIRECT = (
    "no sha256 published by the host; the hash of the first download is recorded beside the file"
)
_NO_HASH_HF = (
    "no sha256 from two independent sources could be confirmed offline when this registry was "
    "written; the hash of the first download is recorded (trust on first use)"
)

# What is known of each host, and where it was learned. A host nobody could check from here
# (the registry was written without network access) says so.
_HEIBOX = (
    "heibox.uni-heidelberg.de: taming-transformers' own Seafile share (the links in taming's "
    "README); reported slow and throttled (taming-transformers#53, pytti-core#131)"
)
_SOMNAI_REPO = "Somnai/pytti-vqgan-checkpoints"
_SOMNAI_REV = "debc22c8f285c7734980c464ff992d335dde6e9a"
_SOMNAI = (
    "Hub mirror made by pytti-core's maintainers in 2026 from the original hosts, 'sha256-"
    "verified against its provenance'; repo, commit and per-file sha256 from pytti-core's "
    "vqgan loader (its manifest.json)"
)
_PXLPSHR_REPO = "pxlpshr/pytti-models"
_PXLPSHR = (
    "Hub mirror of PyTTI Portable; paths, sizes and sha256 from its model_mirror.py; fetched "
    "at branch main (no commit published)"
)
_NEGGLES = (
    "neggles/vaedump on the Hub: the commit page shows the LFS pointer (sha256 5cd6c748..., "
    "376581823 bytes) and the taming GumbelVQ config"
)
_NEHC = (
    "Nehc/vqgan_imagenet_f16_1024 on the Hub: taming's last.ckpt (958 MB, as heibox's) and "
    "model.yaml (645 B); no hash published, so not known to be byte-identical to heibox"
)


def _hf(repo: str, path: str, revision: str, note: str) -> Host:
    return Host(hf_repo=repo, hf_filename=path, revision=revision, note=note)


def _somnai(folder: str, ext: str) -> Host:
    return _hf(_SOMNAI_REPO, f"{folder}/{folder}.{ext}", _SOMNAI_REV, _SOMNAI)


def _pxlpshr(stem: str, ext: str) -> Host:
    return _hf(_PXLPSHR_REPO, f"vqgan/{stem}.{ext}", "main", _PXLPSHR)


def _direct(url: str, note: str, referer: str | None = None) -> Host:
    return Host(url=url, note=note, referer=referer)


def _pinned(sources: str) -> str:
    return f"sha256 published by two or more independent sources that agree: {sources}"


def _vqgan(
    name: str,
    stem: str,
    ckpt: str | None = None,
    yaml: str | None = None,
    *,
    ckpt_mirrors: tuple[str, ...] = (),
    yaml_mirrors: tuple[str, ...] = (),
    ckpt_hosts: tuple[Host, ...] = (),
    yaml_hosts: tuple[Host, ...] = (),
    ckpt_sha256: str | None = None,
    yaml_sha256: str | None = None,
    sha256_note: str = _NO_HASH_DIRECT,
    size_bytes: int | None,
    yaml_size_bytes: int = 2_000,
    licence: str,
    description: str,
    aliases: tuple[str, ...] = (),
) -> WeightSpec:
    """A taming VQGAN: `stem`.yaml + `stem`.ckpt, each from a URL (+ mirrors) and/or hosts."""
    files = (
        FileSpec(
            "config",
            f"{stem}.yaml",
            url=yaml,
            mirrors=yaml_mirrors,
            hosts=yaml_hosts,
            size_bytes=yaml_size_bytes,
            sha256=yaml_sha256,
            sha256_note=sha256_note,
        ),
        FileSpec(
            "checkpoint",
            f"{stem}.ckpt",
            url=ckpt,
            mirrors=ckpt_mirrors,
            hosts=ckpt_hosts,
            size_bytes=size_bytes,
            sha256=ckpt_sha256,
            sha256_note=sha256_note,
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
    host = Host(
        hf_repo=hf_repo,
        hf_filename=hf_filename,
        note="the Hub repository open_clip's pretrained table names for this model; fetched at "
        "branch main (no commit recorded here)",
    )
    ckpt = FileSpec(
        "checkpoint", f"{name}.safetensors", hosts=(host,), size_bytes=size_bytes, sha256_note=note
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
_KOOFR_LINK = "https://app.koofr.net/links/a04deec9-0c59-4673-8b37-3d696fe63a5d"
_BATBOT = "http://batbot.tv/ai/models/vqgan/WikiArt_augmented_Steps_7mil_finetuned_1mil"
_BATBOT_NOTE = (
    "batbot.tv: a personal site over plain http, named as a wikiart mirror in nerdyrodent's "
    "download_models.sh; it serves this checkpoint (WikiArt augmented, 7M steps + 1M fine-tune), "
    "not the WikiArt 1024 model it was listed for; not checked from here"
)
_PYTTI_SOURCES = "pytti-core's Somnai manifest and PyTTI Portable's pxlpshr table"

# Host order: where the hash is pinned, the Hub mirror at a fixed commit comes first (fast, a
# CDN, and the pinned hash proves it serves the same bytes as the original); where it is not,
# the original host comes first, so the hash recorded on first use is the original's.
_SPECS = (
    _vqgan(
        "vqgan_imagenet_f16_1024", "vqgan_imagenet_f16_1024",
        ckpt_hosts=(
            _direct(_heibox(_IMAGENET_1024, _CKPT), _HEIBOX),
            _hf("Nehc/vqgan_imagenet_f16_1024", "ckpts/last.ckpt",
                "a33b7978ed3ba9d9ccce7eb90e44c435bfe26865", _NEHC),
        ),
        yaml_hosts=(
            _direct(_heibox(_IMAGENET_1024, _YAML), _HEIBOX),
            _hf("Nehc/vqgan_imagenet_f16_1024", "configs/model.yaml",
                "a33b7978ed3ba9d9ccce7eb90e44c435bfe26865", _NEHC),
        ),
        size_bytes=958_000_000, licence=_TAMING,
        description="VQGAN ImageNet f16, 1024 codes (Crowson's notebook default)",
        aliases=("imagenet_1024", "imagenet_f16_1024"),
    ),
    _vqgan(
        "vqgan_imagenet_f16_16384", "vqgan_imagenet_f16_16384",
        ckpt_hosts=(
            _somnai("imagenet", "ckpt"),
            _direct(_heibox(_IMAGENET_16384, _CKPT), _HEIBOX),
            _direct("https://heibox.uni-heidelberg.de/f/867b05fc8c4841768640/?dl=1",
                    "heibox direct file link from nerdyrodent's download_models.sh; " + _HEIBOX),
            _pxlpshr("imagenet", "ckpt"),
        ),
        yaml_hosts=(
            _somnai("imagenet", "yaml"),
            _direct(_heibox(_IMAGENET_16384, _YAML), _HEIBOX),
            _direct("https://heibox.uni-heidelberg.de/f/274fb24ed38341bfa753/?dl=1",
                    "heibox direct file link from nerdyrodent's download_models.sh; " + _HEIBOX),
            _pxlpshr("imagenet", "yaml"),
        ),
        ckpt_sha256="845a68805098cb666420d5db93df53f3a3b6dd443e6dd85c05759c5b998cd663",
        yaml_sha256="00e2c6189926f1d89ecfef73e9598db77981c1982f0555fbade963ffd16143c7",
        sha256_note=_pinned(
            _PYTTI_SOURCES + ", and two projects that hash the heibox download (980092370 bytes)"
        ),
        size_bytes=980_092_370, yaml_size_bytes=692, licence=_TAMING,
        description="VQGAN ImageNet f16, 16384 codes (nerdyrodent's default)",
        aliases=("imagenet_16384", "imagenet_f16_16384"),
    ),
    _vqgan(
        "vqgan_gumbel_f8_8192", "vqgan_gumbel_f8_8192",
        ckpt_hosts=(
            _hf("neggles/vaedump", "taming/vq-gumbel-f8-8192/model.ckpt",
                "115a6c7eb8a93cf3114544421f1dbe1b725a99e7", _NEGGLES),
            _somnai("openimages", "ckpt"),
            _direct(_heibox(_GUMBEL_8192, _CKPT), _HEIBOX),
        ),
        yaml_hosts=(
            _hf("neggles/vaedump", "taming/vq-gumbel-f8-8192/config.yaml",
                "115a6c7eb8a93cf3114544421f1dbe1b725a99e7", _NEGGLES),
            _somnai("openimages", "yaml"),
            _direct(_heibox(_GUMBEL_8192, _YAML), _HEIBOX),
        ),
        ckpt_sha256="5cd6c74810ab97e00e942c25403f73afc081e8b19987b31ec0d9ff5b68e7ab14",
        yaml_sha256="91110bab325067b37f85d1e75895a837d59c292bae4f3097f80c518714d5caff",
        sha256_note=_pinned(
            "neggles/vaedump's LFS pointer, " + _PYTTI_SOURCES + ", and an unrelated project's "
            "audit of taming's last.ckpt (376581823 bytes)"
        ),
        size_bytes=376_581_823, yaml_size_bytes=745, licence=_TAMING,
        description="Gumbel VQGAN OpenImages f8, 8192 codes",
        aliases=("gumbel_8192", "vqgan_openimages_f8_8192", "openimages_f8_8192"),
    ),
    # Both original hosts are gone: eaidata.bmk.sh, and mirror.io.community (has not resolved
    # since August 2021: nerdyrodent/VQGAN-CLIP#37, googlecolab/colabtools#2206).
    _vqgan(
        "vqgan_wikiart_f16_16384", "wikiart_16384",
        ckpt_hosts=(_somnai("wikiart", "ckpt"), _pxlpshr("wikiart", "ckpt")),
        yaml_hosts=(_somnai("wikiart", "yaml"), _pxlpshr("wikiart", "yaml")),
        ckpt_sha256="bd08bb46301f98be1712bb2be9f8868cea30b53137cd985d4d6e8da8b3e02c36",
        yaml_sha256="6e78241d2828ff35b8381839ce249c24a6c468ed429760d33a25e98e7f24499a",
        sha256_note=_pinned(_PYTTI_SOURCES),
        size_bytes=1_005_327_541, yaml_size_bytes=920,
        licence=_COMMUNITY,
        description="VQGAN f16, 16384 codes, trained on WikiArt paintings (EleutherAI's run)",
        aliases=("wikiart_16384", "wikiart"),
    ),
    # The WikiArt 1024 model's only host was mirror.io.community; batbot.tv, listed as its
    # mirror, serves this different checkpoint, so it is a model of its own.
    _vqgan(
        "vqgan_wikiart_7mil", "wikiart_7mil",
        ckpt_hosts=(_direct(f"{_BATBOT}.ckpt", _BATBOT_NOTE),),
        yaml_hosts=(_direct(f"{_BATBOT}.yaml", _BATBOT_NOTE),),
        size_bytes=None,
        licence=_COMMUNITY,
        description="VQGAN fine-tuned on augmented WikiArt (7M steps + 1M), batbot.tv's",
        aliases=("wikiart_7mil", "wikiart_augmented"),
    ),
    # The COCO-Stuff first stage alone (296 MB): the VQGAN is all VQGAN+CLIP uses, and the
    # 8.4 GB transformer checkpoint (dl.nmkd.de) holds the same first stage.
    _vqgan(
        "vqgan_coco", "coco_first_stage",
        ckpt_hosts=(
            _somnai("coco", "ckpt"),
            _pxlpshr("coco_first_stage", "ckpt"),
            _direct("http://batbot.ai/models/VQGAN/coco_first_stage.ckpt",
                    "batbot.ai: pytti-core's source for this file before 2026; plain http; not "
                    "checked from here"),
        ),
        yaml_hosts=(
            _somnai("coco", "yaml"),
            _pxlpshr("coco_first_stage", "yaml"),
            _direct("http://batbot.ai/models/VQGAN/coco_first_stage.yaml",
                    "batbot.ai: pytti-core's source for this file before 2026; plain http; not "
                    "checked from here"),
        ),
        ckpt_sha256="106cc20fde571df14afc4349d62218d8213cf47177c682ecaa78a8c28b12f9de",
        yaml_sha256="17d0c2d9fda59eccade2a6070d833804b759dc817da42c2268be8cf1eb047676",
        sha256_note=_pinned(_PYTTI_SOURCES),
        size_bytes=296_030_214, yaml_size_bytes=458, licence=_TAMING,
        description="taming COCO-Stuff first stage VQGAN (f16)",
        aliases=("coco",),
    ),
    _vqgan(
        "vqgan_faceshq", "faceshq",
        ckpt_hosts=(
            _direct(
                "https://app.koofr.net/content/links/a04deec9-0c59-4673-8b37-3d696fe63a5d/files/"
                "get/last.ckpt?path=%2F2020-11-13T21-41-45_faceshq_transformer%2Fcheckpoints%2F"
                "last.ckpt",
                "app.koofr.net: taming's own link; answers 400 to a request without a Referer "
                "(hotlink protection, taming-transformers#196), so the share page is sent",
                referer=_KOOFR_LINK,
            ),
            _somnai("faceshq", "ckpt"),
        ),
        yaml_hosts=(
            _direct(
                "https://drive.google.com/uc?export=download&id=1fHwGx_hnBtC8nsq7hesJvs-Klv-P0gzT",
                "Google Drive link from nerdyrodent's and pytti-core's scripts; its confirm page "
                "is followed",
            ),
            _somnai("faceshq", "yaml"),
        ),
        sha256_note="only pytti-core's Somnai manifest publishes a sha256 (one source); "
        "the hash of the first download is recorded (trust on first use)",
        size_bytes=None, licence=_TAMING,
        description="taming FacesHQ transformer; its first stage is the VQGAN",
        aliases=("faceshq",),
    ),
    _vqgan(
        "vqgan_sflckr", "sflckr",
        ckpt_hosts=(
            _somnai("sflickr", "ckpt"),
            _direct(_heibox(_SFLCKR, "%2Fcheckpoints%2Flast.ckpt"), _HEIBOX),
            _pxlpshr("sflckr", "ckpt"),
        ),
        yaml_hosts=(
            _somnai("sflickr", "yaml"),
            _direct(_heibox(_SFLCKR, "%2Fconfigs%2F2020-11-09T13-31-51-project.yaml"), _HEIBOX),
            _pxlpshr("sflckr", "yaml"),
        ),
        ckpt_sha256="8a8adea3da8dab412675772831370dd948e0aa97bb11a9488a2f328b58dbc929",
        yaml_sha256="c27f012996f3f1f02580f063be47fd60bdd8528efb04d7318b2cbe8a86505b1b",
        sha256_note=_pinned(_PYTTI_SOURCES),
        size_bytes=4_263_525_412, yaml_size_bytes=1_603, licence=_TAMING,
        description="taming S-FLCKR landscape transformer; its first stage is the VQGAN",
        aliases=("sflckr", "s_flckr", "sflickr"),
    ),
    # A taming checkpoint of its own: the ImageNet 16384 model fine-tuned by Boris Dayma on
    # CC3M + YFCC100M for people and faces (DALL-E mini's VQGAN), per its model card.
    _vqgan(
        "vqgan_f16_16384_dalle_mini", "vqgan_f16_16384_dalle_mini",
        ckpt_hosts=(
            _hf("boris/vqgan_f16_16384", "model.ckpt",
                "946c5d2f88276c3796bda51babbb4b9626f3d554",
                "boris/vqgan_f16_16384 on the Hub: model.ckpt and config.yaml added in commit "
                "946c5d2 ('feat: add model'); later commits only edit the README"),
        ),
        yaml_hosts=(
            _hf("boris/vqgan_f16_16384", "config.yaml",
                "946c5d2f88276c3796bda51babbb4b9626f3d554",
                "boris/vqgan_f16_16384 on the Hub, commit 946c5d2"),
        ),
        sha256_note="no sha256 published beside the Hub's own LFS pointer (one source); the "
        "hash of the first download is recorded (trust on first use)",
        size_bytes=None,
        licence="unknown (no licence on the model card; a fine-tune of taming's MIT model)",
        description="VQGAN f16 16384 fine-tuned on CC3M + YFCC100M for people and faces "
        "(DALL-E mini's)",
        aliases=("boris/vqgan_f16_16384", "dalle_mini_vqgan", "vqgan_f16_16384_cc3m"),
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
