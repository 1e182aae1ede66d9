"""Where downloaded weights live, and whether a cached file is still the one that was downloaded.

Layout: `<root>/<name>/<filename>` for a registry model's files fetched from direct URLs, plus
`model.safetensors` and `model.json` once `vqclip models convert` has written the fast-loading
copy. Each file fetched or converted by vqclip gets a `<file>.sha256` sidecar (sha256sum format)
holding its hash. Files from the Hugging Face Hub stay in the Hub's shared cache (`hub.py`); a
file placed by hand in vqclip's folder is used before either.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

from vqclip.atomic import atomic_write_text
from vqclip.errors import ChecksumError
from vqclip.weights import hub
from vqclip.weights.registry import CONVERTED_FILENAMES, FileSpec, WeightSpec

_CHUNK = 1 << 20
_ORPHAN_AGE_S = 3600  # a leftover temporary this old belongs to no running write


def cache_root() -> Path:
    """$VQCLIP_HOME, else $XDG_CACHE_HOME/vqclip, else ~/.cache/vqclip (read at each call)."""
    home = os.environ.get("VQCLIP_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / "vqclip"
    return Path.home() / ".cache" / "vqclip"


def cache_problem() -> str | None:
    """Why the cache folder cannot hold files (a file in its place, or a place this user may
    not write), else None."""
    root = cache_root()
    source = "VQCLIP_HOME" if os.environ.get("VQCLIP_HOME") else "the cache folder"
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is None:
        return None
    if not existing.is_dir():
        return f"{source} {str(root)!r} is under the file {str(existing)!r}, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{source} {str(root)!r}: {str(existing)!r} is not writable by this user"
    return None


def model_dir(spec: WeightSpec) -> Path:
    return cache_root() / spec.name


def own_path(spec: WeightSpec, f: FileSpec) -> Path:
    """Where vqclip keeps `f` when it comes from a direct URL (or is placed by hand)."""
    return model_dir(spec) / f.filename


def find_file(spec: WeightSpec, f: FileSpec) -> Path | None:
    """Where `f` already is: vqclip's folder, else the Hub cache of one of its Hub hosts (a copy
    whose content is not the pinned sha256 is passed over). Never touches the network."""
    own = own_path(spec, f)
    if own.is_file():
        return own
    for host in f.sources:
        if not host.is_hub:
            continue
        path = hub.find_in_cache(host)
        if path is not None and (f.sha256 is None or hub_file_sha256(path) == f.sha256):
            return path
    return None


def hub_file_sha256(path: Path) -> str:
    """A Hub-cached file's sha256: its LFS blob's name, or (small files) hashed."""
    return hub.blob_sha256(path) or sha256_file(path)


def cached_paths(spec: WeightSpec) -> dict[str, Path]:
    """role -> the path where that file is, or (if nowhere yet) where vqclip would put it."""
    return {f.role: find_file(spec, f) or own_path(spec, f) for f in spec.files}


def is_cached(spec: WeightSpec) -> bool:
    """True when every original file of `spec` is on disk (vqclip's folder or the Hub cache)."""
    return all(find_file(spec, f) is not None for f in spec.files)


def clean_orphans(spec: WeightSpec) -> list[Path]:
    """Delete leftovers no download will continue; return them.

    Once an hour old (so no running write is touched): atomic-write temporaries
    (`.<name>.<random>.part`), partial files of names the model no longer has, and partial
    files of files that are complete. A partial file of a missing file is kept: the next
    download continues it.
    """
    folder = model_dir(spec)
    if not folder.is_dir():
        return []
    names = {f.filename for f in spec.files}
    now = time.time()
    removed = []
    for path in folder.iterdir():
        name = path.name
        if name.endswith(".part.json"):
            base = name[: -len(".part.json")]
        elif name.endswith(".part"):
            base = name[: -len(".part")]
        else:
            continue
        stale = now - _mtime(path) > _ORPHAN_AGE_S
        own_temp = name.startswith(".")
        done = base in names and (folder / base).is_file()
        if stale and (own_temp or base not in names or done):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def converted_paths(spec: WeightSpec) -> tuple[Path, Path]:
    """(model.safetensors, model.json): the fast-loading copy written by `vqclip models convert`."""
    folder = model_dir(spec)
    weights, config = CONVERTED_FILENAMES
    return folder / weights, folder / config


def is_converted(spec: WeightSpec) -> bool:
    """True when the converted copy can be loaded instead of the original files."""
    weights, config = converted_paths(spec)
    # A CLIP's architecture comes from its registry preset; a VQGAN's only from model.json.
    return weights.is_file() and (spec.kind == "clip" or config.is_file())


# integrity


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_sidecar(path: Path) -> str | None:
    """The recorded sha256 of `path`, or None if there is no (readable) sidecar."""
    try:
        text = sidecar_path(path).read_text().split()
    except OSError:
        return None
    return text[0].lower() if text else None


def write_sidecar(path: Path, digest: str) -> None:
    atomic_write_text(sidecar_path(path), f"{digest}  {path.name}\n")


def check_file(path: Path, pinned: str | None = None, *, fix_hint: str) -> None:
    """Raise ChecksumError if `path` no longer matches its pinned or recorded sha256.

    A file untouched since its sidecar was written (mtime not newer) is trusted without
    re-hashing, so loading a 1 GB checkpoint does not cost a full read each time. A file with no
    sidecar (placed by hand) is hashed once: checked against `pinned` if there is one, then
    recorded (trust on first use).
    """
    recorded = read_sidecar(path)
    expected = pinned or recorded
    if recorded is not None and (pinned is None or recorded == pinned):
        sidecar_mtime = sidecar_path(path).stat().st_mtime_ns
        if path.stat().st_mtime_ns <= sidecar_mtime:
            return
    digest = sha256_file(path)
    if expected is not None and digest != expected:
        what = "the published" if pinned else "the recorded"
        raise ChecksumError(
            f"{path} does not match {what} sha256 (expected {expected}, got {digest}): the file "
            f"is corrupt or was replaced. {fix_hint} (If you replaced it on purpose, delete "
            f"{sidecar_path(path).name}.)"
        )
    # A read-only shared cache still loads; it just cannot remember the hash.
    with contextlib.suppress(OSError):
        write_sidecar(path, digest)
