"""The shape of a pretrained model in the registry: its files, and each file's hosts.

`WeightSpec` is a model (its files, licence and, for CLIP, preprocessing); `FileSpec` one of its
files (name, hosts in order, sha256 or why none is pinned); `Host` one place a file is fetched
from. All are validated on construction.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from vqclip.errors import ConfigError

KINDS = ("vqgan", "clip", "prior")
PRIOR_FORMATS = ("maskgit", "amused")  # how a registry prior's checkpoint is read
VQGAN_FORMATS = ("amused",)  # a registry VQGAN that is not a taming checkpoint + YAML
# Names the converter writes into a model's cache folder; a download must never use them.
CONVERTED_FILENAMES = ("model.safetensors", "model.json")

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
    """A pretrained model: its files, licence and, for CLIP, the preprocessing it expects.
    `notice` is printed once, before its files are first downloaded (a licence's terms)."""

    name: str
    kind: str
    files: tuple[FileSpec, ...]
    licence: str
    description: str
    aliases: tuple[str, ...] = ()
    # CLIP: open_clip architecture name; a prior: its format (PRIOR_FORMATS); a VQGAN: its
    # format, None for taming's (VQGAN_FORMATS)
    preset: str | None = None
    # CLIP only: activation and input preprocessing.
    quick_gelu: bool = False
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    notice: str = ""

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
        clip_fields = (self.input_size, self.mean, self.std)
        if self.kind == "vqgan" and (any(v is not None for v in clip_fields) or self.quick_gelu):
            raise ConfigError(f"WeightSpec {self.name}: CLIP fields set on a VQGAN")
        if self.kind == "vqgan" and self.preset not in (None, *VQGAN_FORMATS):
            raise ConfigError(
                f"WeightSpec {self.name}: a VQGAN's preset names its format, one of "
                f"{VQGAN_FORMATS} (None: taming's), got {self.preset!r}"
            )
        if self.kind == "prior" and self.preset not in PRIOR_FORMATS:
            raise ConfigError(
                f"WeightSpec {self.name}: a prior's preset names its format, one of "
                f"{PRIOR_FORMATS}, got {self.preset!r}"
            )
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
