"""Fetch a registry model's files into the cache: atomically, hashed, and with clear offline errors.

Plain urllib, so vqclip needs no huggingface_hub. A file is streamed to a temporary `.part` file
beside its destination while being hashed; only a complete file whose sha256 checks out is renamed
to its final name, so an interrupted or corrupt download never looks like a cached file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from vqclip import __version__
from vqclip.atomic import atomic_write
from vqclip.errors import ChecksumError, VQClipError, WeightsNotFoundError
from vqclip.weights.cache import cached_paths, check_file, write_sidecar
from vqclip.weights.registry import FileSpec, WeightSpec

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
OFFLINE_VARS = ("VQCLIP_OFFLINE", "HF_HUB_OFFLINE")
_TIMEOUT_S = 60  # per blocking socket operation, not for the whole file
_CHUNK = 1 << 20
_BINARY_SUFFIXES = (".ckpt", ".safetensors", ".bin", ".pt", ".pth")


class _FetchFailed(Exception):
    """One source could not deliver the file (network, HTTP error, wrong content)."""


def offline_reason() -> str | None:
    """The offline variable that is set (e.g. "VQCLIP_OFFLINE=1"), or None when online."""
    for var in OFFLINE_VARS:
        value = os.environ.get(var, "").strip()
        if value.lower() in ("1", "true", "yes", "on"):
            return f"{var}={value}"
    return None


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def hf_url(repo: str, filename: str, revision: str = "main") -> str:
    rev = urllib.parse.quote(revision, safe="")
    return f"{hf_endpoint()}/{repo}/resolve/{rev}/{urllib.parse.quote(filename)}"


def source_urls(f: FileSpec) -> list[str]:
    """Every URL `f` can be fetched from, primary first."""
    primary = hf_url(f.hf_repo, f.hf_filename, f.revision) if f.hf_repo else f.url
    return [primary, *f.mirrors]


def build_request(url: str) -> urllib.request.Request:
    request = urllib.request.Request(url, headers={"User-Agent": f"vqclip/{__version__}"})
    token = os.environ.get("HF_TOKEN")
    if token and url.startswith(hf_endpoint() + "/"):
        # Unredirected: the token goes to the Hub only, never to the CDN it redirects to.
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    return request


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        hint = " (set HF_TOKEN if the repository is gated)" if error.code in (401, 403) else ""
        return f"HTTP {error.code} {error.reason}{hint}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect: {error.reason}"
    return f"{type(error).__name__}: {error}"


def download_file(url: str, dest: Path, *, sha256: str | None = None, progress: bool = True) -> str:
    """Stream `url` to `dest` atomically and return its sha256; record it in `dest`.sha256.

    Raises ChecksumError (and keeps nothing) when `sha256` is given and does not match.
    Network trouble raises _FetchFailed; the caller turns it into an actionable error.
    """
    try:
        response = urllib.request.urlopen(build_request(url), timeout=_TIMEOUT_S)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        raise _FetchFailed(_describe(e)) from e
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        content_type = response.headers.get("Content-Type") or ""
        if "text/html" in content_type and dest.suffix in _BINARY_SUFFIXES:
            raise _FetchFailed("the server sent a web page instead of the file (link moved?)")
        digest = hashlib.sha256()
        received = 0
        bar = tqdm(
            total=total,
            desc=dest.name,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=None if progress else True,
        )
        with bar, atomic_write(dest, "wb") as out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _FetchFailed(f"connection lost after {received} bytes: {e}") from e
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:
                    raise VQClipError(f"cannot write {dest}: {e.strerror or e}") from e
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            if total is not None and received != total:
                raise _FetchFailed(f"connection closed after {received} of {total} bytes")
            got = digest.hexdigest()
            if sha256 is not None and got != sha256:
                raise ChecksumError(
                    f"download of {dest.name} is corrupt: expected sha256 {sha256}, got {got} "
                    f"(from {url}). The file was deleted; try again, or report a changed source."
                )
    write_sidecar(dest, got)
    return got


def _not_found_message(
    spec: WeightSpec, files: list[FileSpec], reason: str, details: Sequence[str] = ()
) -> str:
    paths = cached_paths(spec)
    lines = [f"{spec.name}: {len(files)} file(s) are not in the cache and {reason}.", *details]
    lines.append("Fetch them on a machine with network access and put them here:")
    for f in files:
        urls = source_urls(f)
        lines.append(f"  {paths[f.role]}")
        lines.append(f"      from {urls[0]}")
        lines.extend(f"      or   {u}" for u in urls[1:])
    lines.append(f"Or, once online: vqclip models download {spec.name}")
    return "\n".join(lines)


def ensure_files(
    spec: WeightSpec, *, download: bool = True, progress: bool = True, force: bool = False
) -> dict[str, Path]:
    """Make sure every file of `spec` is cached and intact; return role -> path.

    Present files are checked against their pinned or recorded sha256. Missing files (or all of
    them with `force`) are downloaded, each source tried in turn. Offline, with `download=False`,
    or when every source fails, raises WeightsNotFoundError naming each missing file, where to put
    it and where to fetch it from.
    """
    paths = cached_paths(spec)
    fix_hint = f"Run `vqclip models download {spec.name} --force`."
    todo = [f for f in spec.files if force or not paths[f.role].is_file()]
    for f in spec.files:
        if f not in todo:
            check_file(paths[f.role], f.sha256, fix_hint=fix_hint)
    if not todo:
        return paths
    if not download:
        raise WeightsNotFoundError(_not_found_message(spec, todo, "downloading is turned off"))
    offline = offline_reason()
    if offline:
        raise WeightsNotFoundError(
            _not_found_message(spec, todo, f"cannot be downloaded in offline mode ({offline})")
        )
    for i, f in enumerate(todo):
        failures = []
        for url in source_urls(f):
            try:
                download_file(url, paths[f.role], sha256=f.sha256, progress=progress)
                break
            except _FetchFailed as e:
                failures.append(f"  {url}: {e}")
        else:
            message = _not_found_message(spec, todo[i:], "could not be downloaded", failures)
            raise WeightsNotFoundError(message)
    return paths
