"""Fetch a registry model's files: each host in turn, one process at a time, hashed, clear offline.

A file from the Hugging Face Hub goes through huggingface_hub into the Hub's shared cache
(`hub.py`). A file from a direct URL goes into vqclip's cache through `fetch.py` (resumed,
retried); a file lock makes a second process wait for the first one's download and reuse it.
Only a complete file whose sha256 checks out gets its final name. With no network, offline
mode, or every host failing, the error names each missing file, where to put it and where to
get it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from vqclip.errors import ChecksumError, VQClipError, WeightsNotFoundError
from vqclip.weights import hub
from vqclip.weights.cache import (
    cache_problem,
    check_file,
    clean_orphans,
    find_file,
    own_path,
    sha256_file,
    sidecar_path,
    write_sidecar,
)
from vqclip.weights.fetch import FetchFailed, Retry, fetch_url, part_paths, part_source
from vqclip.weights.hub import HF_DEFAULT_ENDPOINT, hf_endpoint
from vqclip.weights.registry import FileSpec, Host, WeightSpec

__all__ = ["HF_DEFAULT_ENDPOINT", "Retry", "ensure_files", "hf_url", "source_urls"]

OFFLINE_VARS = ("VQCLIP_OFFLINE", "HF_HUB_OFFLINE")


def offline_reason() -> str | None:
    """The offline variable that is set (e.g. "VQCLIP_OFFLINE=1"), or None when online."""
    for var in OFFLINE_VARS:
        value = os.environ.get(var, "").strip()
        if value.lower() in ("1", "true", "yes", "on"):
            return f"{var}={value}"
    return None


def hf_url(repo: str, filename: str, revision: str = "main") -> str:
    rev = urllib.parse.quote(revision, safe="")
    return f"{hf_endpoint()}/{repo}/resolve/{rev}/{urllib.parse.quote(filename)}"


def host_url(host: Host) -> str:
    return hf_url(host.hf_repo, host.hf_filename, host.revision) if host.is_hub else host.url


def source_urls(f: FileSpec) -> list[str]:
    """Every URL `f` can be fetched from, in the order they are tried."""
    return [host_url(h) for h in f.sources]


def hub_auth(url: str) -> dict[str, str]:
    """HF_TOKEN as a header, for direct URLs on the Hub's endpoint only."""
    token = os.environ.get("HF_TOKEN")
    if token and url.startswith(hf_endpoint() + "/"):
        return {"Authorization": f"Bearer {token}"}
    return {}


def _not_found_message(
    spec: WeightSpec, files: list[FileSpec], reason: str, details: Sequence[str] = ()
) -> str:
    lines = [f"{spec.name}: {len(files)} file(s) are not in the cache and {reason}.", *details]
    problem = cache_problem()
    if problem is not None:  # no use telling the user to put files where none can go
        lines.append(f"The weights cache cannot hold them: {problem}.")
        lines.append("Point VQCLIP_HOME at a folder you can write to, then fetch them again.")
        return "\n".join(lines)
    lines.append("Fetch them on a machine with network access and put them here:")
    for f in files:
        urls = source_urls(f)
        lines.append(f"  {own_path(spec, f)}")
        lines.append(f"      from {urls[0]}")
        lines.extend(f"      or   {u}" for u in urls[1:])
    lines.append(f"Or, once online: vqclip models download {spec.name}")
    return "\n".join(lines)


def ensure_files(
    spec: WeightSpec,
    *,
    download: bool = True,
    progress: bool = True,
    force: bool = False,
    retry: Retry | None = None,
) -> dict[str, Path]:
    """Make sure every file of `spec` is on disk and intact; return role -> path.

    Present files (vqclip's cache, or the Hub cache for Hub hosts) are checked against their
    pinned or recorded sha256. Missing files (or all of them with `force`) are downloaded, each
    host tried in turn, after the spec's `notice` (a licence's terms) is printed. Offline, with
    `download=False`, or when every host fails, raises WeightsNotFoundError naming each missing
    file, where to put it and where to fetch it from.
    """
    fix_hint = f"Run `vqclip models download {spec.name} --force`."
    paths: dict[str, Path] = {}
    todo = []
    for f in spec.files:
        found = None if force else find_file(spec, f)
        if found is None:
            todo.append(f)
        else:
            _check_present(found, f, spec, fix_hint)
            paths[f.role] = found
    if not todo:
        return paths
    if not download:
        raise WeightsNotFoundError(_not_found_message(spec, todo, "downloading is turned off"))
    offline = offline_reason()
    if offline:
        raise WeightsNotFoundError(
            _not_found_message(spec, todo, f"cannot be downloaded in offline mode ({offline})")
        )
    if spec.notice:  # once: after this download the files are found and nothing is fetched
        print(f"{spec.name}: {spec.notice}", file=sys.stderr)
    for i, f in enumerate(todo):
        try:
            paths[f.role] = _fetch_file(spec, f, progress, force, retry or Retry(), fix_hint)
        except _AllHostsFailed as e:
            message = _not_found_message(spec, todo[i:], "could not be downloaded", e.args[0])
            raise WeightsNotFoundError(message) from None
    return paths


def check_available(specs: Sequence[WeightSpec], hint: str) -> None:
    """When downloads cannot happen (offline mode), one WeightsNotFoundError naming every file
    of `specs` not in the cache, its hosts, and `vqclip models download <hint>`, before any
    model loads; nothing otherwise (online, a missing file is downloaded when loaded)."""
    from vqclip.weights.cache import is_converted

    offline = offline_reason()
    if not offline:
        return
    missing = [
        (spec, todo)
        for spec in specs
        if not is_converted(spec)
        and (todo := [f for f in spec.files if find_file(spec, f) is None])
    ]
    if not missing:
        return
    count = sum(len(todo) for _, todo in missing)
    lines = [f"{count} weight file(s) are not in the cache and offline mode is on ({offline})."]
    problem = cache_problem()
    if problem is not None:  # no use telling the user to put files where none can go
        lines.append(f"The weights cache cannot hold them: {problem}.")
        lines.append("Point VQCLIP_HOME at a folder you can write to, then fetch them again.")
        raise WeightsNotFoundError("\n".join(lines))
    lines.append("Fetch them on a machine with network access and put them here:")
    for spec, todo in missing:
        for f in todo:
            urls = source_urls(f)
            lines.append(f"  {own_path(spec, f)}  ({spec.name} {f.role})")
            lines.append(f"      from {urls[0]}")
            lines.extend(f"      or   {u}" for u in urls[1:])
    lines.append(f"Or, once online: vqclip models download {hint}")
    raise WeightsNotFoundError("\n".join(lines))


class _AllHostsFailed(Exception):
    """Every host of a file failed; args[0] lists why, one line per host."""


def _check_present(path: Path, f: FileSpec, spec: WeightSpec, fix_hint: str) -> None:
    if path == own_path(spec, f):
        check_file(path, f.sha256, fix_hint=fix_hint)
    # A Hub-cached copy was matched against a pinned hash by find_file; the Hub's cache is
    # content-addressed, so there is no sidecar to keep beside it.


def _fetch_file(
    spec: WeightSpec, f: FileSpec, progress: bool, force: bool, retry: Retry, fix_hint: str
) -> Path:
    dest = own_path(spec, f)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(dest.with_name(dest.name + ".lock"))
        _acquire(lock, dest, progress)
    except OSError as e:
        raise VQClipError(f"cannot write to the weights cache {dest.parent}: {e}") from e
    try:
        found = None if force else find_file(spec, f)
        if found is not None:  # another process fetched it while we waited
            _check_present(found, f, spec, fix_hint)
            return found
        clean_orphans(spec)
        failures = []
        for host in _ordered_hosts(f, dest):
            try:
                if host.is_hub:
                    path = _from_hub(host, f, progress, force)
                else:
                    path = _from_url(host, f, dest, progress, retry)
            except (FetchFailed, hub.HubFetchFailed, ChecksumError) as e:
                failures.append(f"  {host_url(host)}: {e}")
                continue
            if force and path != dest:  # the fresh Hub copy must not be shadowed by an old one
                for old in (dest, sidecar_path(dest)):
                    with contextlib.suppress(FileNotFoundError):
                        old.unlink()
            return path
        raise _AllHostsFailed(failures)
    finally:
        lock.release()


def _acquire(lock: FileLock, dest: Path, progress: bool) -> None:
    try:
        lock.acquire(timeout=0.1)
    except Timeout:
        if progress:
            print(f"waiting for another vqclip process to download {dest.name}", file=sys.stderr)
        lock.acquire()


def _ordered_hosts(f: FileSpec, dest: Path) -> list[Host]:
    """The file's hosts in order, except that one whose partial file is on disk goes first."""
    hosts = list(f.sources)
    started = part_source(dest)
    resumable = [h for h in hosts if not h.is_hub and h.url == started]
    return resumable + [h for h in hosts if h not in resumable]


def _from_hub(host: Host, f: FileSpec, progress: bool, force: bool) -> Path:
    path = hub.fetch(host, progress=progress, force=force)
    if f.sha256 is not None:
        got = sha256_file(path)  # the bytes that arrived, not only the blob name the Hub claims
        if got != f.sha256:
            raise ChecksumError(f"{path} has sha256 {got}, not the pinned {f.sha256}")
    return path


def _from_url(host: Host, f: FileSpec, dest: Path, progress: bool, retry: Retry) -> Path:
    if progress:
        print(f"downloading {dest.name} from {host.label}", file=sys.stderr)
    digest, _ = fetch_url(
        host.url,
        dest,
        referer=host.referer,
        headers=hub_auth(host.url),
        retry=retry,
        progress=progress,
    )
    part, meta = part_paths(dest)
    if f.sha256 is not None and digest != f.sha256:
        part.unlink()
        meta.unlink(missing_ok=True)
        raise ChecksumError(
            f"download of {dest.name} is corrupt: expected sha256 {f.sha256}, got {digest} "
            f"(from {host.url}); it was deleted"
        )
    os.replace(part, dest)
    meta.unlink(missing_ok=True)
    write_sidecar(dest, digest)
    return dest
