"""Files on the Hugging Face Hub, through huggingface_hub and its shared cache.

A Hub file lives where huggingface_hub keeps it (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
`~/.cache/huggingface/hub`), so a CLIP that open_clip or timm already fetched is found there and
used without a download, and one vqclip fetches is shared with them. The settings are read at
each call rather than when huggingface_hub is imported, so they can change at run time (tests do).
HF_TOKEN is passed on; HF_HUB_OFFLINE / VQCLIP_OFFLINE are checked by the caller.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from vqclip.errors import VQClipError
from vqclip.weights.registry import Host

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class HubFetchFailed(Exception):
    """The Hub could not deliver a file (network, missing repo/file/revision, gated)."""


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, by its own precedence of settings."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _require_hub():
    try:
        import huggingface_hub
    except ImportError as e:  # a dependency, so only a broken install lands here
        raise VQClipError(
            "huggingface_hub is needed to fetch files from the Hugging Face Hub: "
            "pip install huggingface_hub"
        ) from e
    return huggingface_hub


def find_in_cache(host: Host) -> Path | None:
    """The cached copy of a Hub file, or None; never touches the network.

    A revision that is a branch ("main") resolves through the cache's refs/main, as
    huggingface_hub does offline.
    """
    hub = _require_hub()
    found = hub.try_to_load_from_cache(
        host.hf_repo, host.hf_filename, cache_dir=hub_cache_dir(), revision=host.revision
    )
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def blob_sha256(path: Path) -> str | None:
    """The sha256 of a cached Hub file without reading it: an LFS file's blob is named by it.

    None for small (non-LFS) files, whose blobs are named by their git hash instead.
    """
    name = Path(os.path.realpath(path)).name
    return name if _SHA256.fullmatch(name) else None


def unresolvable(url: str) -> str | None:
    """Why `url`'s host has no address (a machine without network or DNS), or None. Checked
    before a Hub download, whose client retries a failed lookup for about 25 s."""
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as e:
        return f"cannot resolve {host} ({e.strerror}): no network?"
    return None


def fetch(host: Host, *, progress: bool = True, force: bool = False) -> Path:
    """Download a Hub file into the shared cache (or find it there) and return its path."""
    hub = _require_hub()
    from huggingface_hub import errors

    why = unresolvable(hf_endpoint())
    if why:
        raise HubFetchFailed(why)

    try:
        with _progress_bars(progress and sys.stderr.isatty()):
            path = hub.hf_hub_download(
                host.hf_repo,
                host.hf_filename,
                revision=host.revision,
                cache_dir=hub_cache_dir(),
                endpoint=hf_endpoint(),
                token=os.environ.get("HF_TOKEN") or None,
                library_name="vqclip",
                force_download=force,
            )
    except errors.GatedRepoError as e:
        raise HubFetchFailed(f"{host.hf_repo} is gated: accept its terms and set HF_TOKEN") from e
    except errors.RepositoryNotFoundError as e:
        message = f"no repository {host.hf_repo} (or it is private: set HF_TOKEN)"
        raise HubFetchFailed(message) from e
    except errors.RevisionNotFoundError as e:
        raise HubFetchFailed(f"{host.hf_repo} has no revision {host.revision}") from e
    except errors.LocalEntryNotFoundError as e:  # the Hub did not answer, and not in the cache
        cause = e.__cause__ or e.__context__
        why = f"{type(cause).__name__}: {str(cause).splitlines()[0]}" if cause else "no answer"
        raise HubFetchFailed(f"{hf_endpoint()} did not deliver it ({why})") from e
    except errors.EntryNotFoundError as e:
        raise HubFetchFailed(f"{host.hf_repo}@{host.revision} has no {host.hf_filename}") from e
    except (errors.HfHubHTTPError, OSError, ValueError) as e:
        raise HubFetchFailed(f"{type(e).__name__}: {str(e).splitlines()[0]}") from e
    return Path(path)


@contextlib.contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    """huggingface_hub's bars off for this download when not wanted (it has no per-call switch
    in the versions vqclip supports), then back as they were."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    toggle = not show and not are_progress_bars_disabled()
    if toggle:
        disable_progress_bars()
    try:
        yield
    finally:
        if toggle:
            enable_progress_bars()
