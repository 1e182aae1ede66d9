"""Fetch one direct URL into a partial file that survives faults: resumed, retried, checked.

The bytes go to `<file>.part`, and `<file>.part.json` records the URL and the server's validator
(ETag or Last-Modified). A later attempt, in this process or after a kill -9, sends
`Range: bytes=<size>-` with `If-Range: <validator>`, so it continues where the file stopped,
or (if the file on the server changed) gets it whole. A 5xx, a reset or dropped connection and
a timeout are retried with exponential backoff before the caller moves on to the next host;
an attempt that received bytes does not count against the budget. Google Drive's "can't scan
for viruses" page is followed to the file; any other web page in place of a file is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.cookiejar
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from tqdm import tqdm

from vqclip import __version__
from vqclip.errors import VQClipError

_CHUNK = 1 << 20
_RETRY_STATUS = (408, 425, 429, 500, 502, 503, 504)
_HTML_START = re.compile(rb"\s*(<!doctype\s+html|<html|<head|<body)", re.IGNORECASE)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)|bytes\s+\*/(\d+)")


@dataclass(frozen=True)
class Retry:
    """How hard to try one host: attempts that receive nothing, the first wait (doubled after
    each failure, at most `max_backoff_s`), and the limit on each socket operation."""

    attempts: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: float = 60.0


class FetchFailed(Exception):
    """This host cannot deliver the file now; the caller tries the next one."""


class _Retryable(Exception):
    """A fault worth another attempt at the same host (5xx, reset, timeout, short body)."""


def part_paths(dest: Path) -> tuple[Path, Path]:
    """(`<dest>.part`, `<dest>.part.json`): the partial file and what it was fetched from."""
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def part_source(dest: Path) -> str | None:
    """The URL the partial file of `dest` came from, or None if there is no usable one."""
    part, meta = part_paths(dest)
    if not part.is_file():
        return None
    try:
        return json.loads(meta.read_text())["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fetch_url(
    url: str,
    dest: Path,
    *,
    referer: str | None = None,
    headers: dict[str, str] | None = None,
    retry: Retry = Retry(),
    progress: bool = True,
) -> tuple[str, int]:
    """Bring `url` into `dest`'s partial file, complete; return its (sha256, size).

    The caller renames the partial file into place once it has checked the hash. Raises
    FetchFailed when this host cannot deliver after the retries.
    """
    failures = 0
    while True:
        try:
            return _attempt(url, dest, referer, headers or {}, retry, progress)
        except _Retryable as e:
            received = e.args[1] if len(e.args) > 1 else 0
            failures = 0 if received else failures + 1
            if failures >= retry.attempts:
                raise FetchFailed(f"{e.args[0]} (gave up after {retry.attempts} attempts)") from e
            time.sleep(min(retry.backoff_s * 2 ** max(failures - 1, 0), retry.max_backoff_s))


def build_request(
    url: str, offset: int, validator: str | None, referer: str | None, extra: dict[str, str]
) -> urllib.request.Request:
    request = urllib.request.Request(url, headers={"User-Agent": f"vqclip/{__version__}"})
    if referer:
        request.add_header("Referer", referer)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        if validator:
            request.add_header("If-Range", validator)
    for key, value in extra.items():
        # Unredirected: credentials go to this host only, never to a CDN it redirects to.
        request.add_unredirected_header(key, value)
    return request


def _attempt(
    url: str,
    dest: Path,
    referer: str | None,
    extra: dict[str, str],
    retry: Retry,
    progress: bool,
) -> tuple[str, int]:
    part, meta = part_paths(dest)
    if part_source(dest) != url:  # a partial file from another URL cannot be continued
        _discard(dest)
    offset = part.stat().st_size if part.is_file() else 0
    validator = _read_meta(meta).get("validator") if offset else None
    # Cookies: Google Drive's confirm step sets one that the file request must carry.
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    target = url
    for _ in range(3):  # the URL, then at most two confirm pages
        request = build_request(target, offset, validator, referer, extra)
        try:
            response = opener.open(request, timeout=retry.timeout_s)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                size = _range_total(e.headers.get("Content-Range", ""))
                if size == offset:  # we already have all of it
                    return _hash_file(part), offset
                _discard(dest)
                raise _Retryable(f"HTTP 416 at byte {offset}; starting over") from e
            if e.code in _RETRY_STATUS:
                raise _Retryable(f"HTTP {e.code} {e.reason}") from e
            raise FetchFailed(_describe_http(e)) from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, socket.gaierror):
                raise FetchFailed(f"cannot resolve the host name: {e.reason}") from e
            raise _Retryable(f"cannot connect: {e.reason}") from e
        except (OSError, http.client.HTTPException) as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from e
        with response:
            if _is_html(response):
                page = response.read(1 << 20)
                confirm = drive_confirm_url(page, response.geturl())
                if confirm is None:
                    raise FetchFailed(
                        f"the server sent a web page instead of the file: {url} (the link may "
                        "have moved, or the host wants a login)"
                    )
                target, offset, validator = confirm, 0, None
                _discard(dest)
                continue
            return _receive(url, response, dest, offset, progress)
    raise FetchFailed(f"{url} kept answering with confirm pages")


def _receive(url: str, response, dest: Path, offset: int, progress: bool) -> tuple[str, int]:
    part, meta = part_paths(dest)
    length = response.headers.get("Content-Length")
    body = int(length) if length and length.isdigit() else None
    if response.status == 206:
        start = _range_start(response.headers.get("Content-Range", ""))
        if start != offset:
            _discard(dest)
            raise _Retryable(f"the server resumed at byte {start}, not {offset}")
    else:  # a whole file: the server ignored the Range or the file changed (If-Range)
        offset = 0
    total = None if body is None else offset + body
    digest = hashlib.sha256()
    if offset:
        _hash_into(part, digest)
    validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
    if validator and validator.startswith("W/"):
        validator = None  # a weak ETag may not be used with If-Range
    _write_meta(meta, {"url": url, "validator": validator, "total": total})
    received = offset
    bar = _progress_bar(dest.name, total, offset, progress)
    try:
        with bar, open(part, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            while True:
                try:
                    # read1: what has arrived, so a stall or a kill loses none of it
                    chunk = response.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Retryable(
                        f"connection lost after {received} bytes: {type(e).__name__}: {e}",
                        received - offset,
                    ) from e
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:
                    raise VQClipError(f"cannot write {part}: {e.strerror or e}") from e
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    finally:
        bar.close()
    if total is not None and received < total:
        raise _Retryable(f"connection closed after {received} of {total} bytes", received - offset)
    return digest.hexdigest(), received


# helpers


def _is_html(response) -> bool:
    if "text/html" in (response.headers.get("Content-Type") or "").lower():
        return True
    return bool(_HTML_START.match(response.peek(512) if hasattr(response, "peek") else b""))


class _DriveForm(HTMLParser):
    """Finds Google Drive's download form (or its older confirm link) in a warning page."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.link: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs) -> None:
        a = dict(attrs)
        if tag == "form" and a.get("id") == "download-form":
            self.action, self._in_form = a.get("action"), True
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""
        elif tag == "a" and a.get("id") == "uc-download-link" and a.get("href"):
            self.link = a["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def drive_confirm_url(page: bytes, page_url: str) -> str | None:
    """The file's URL from a Google Drive "can't scan this file" page, or None for other pages.

    Followed only to a Google host or the page's own host, so a stray page cannot send the
    download elsewhere.
    """
    form = _DriveForm()
    form.feed(page.decode("utf-8", "replace"))
    if form.action:
        url = urllib.parse.urljoin(page_url, form.action)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode(form.fields)
    elif form.link:
        url = urllib.parse.urljoin(page_url, form.link)
    else:
        return None
    host = urllib.parse.urlsplit(url).hostname or ""
    same = host == urllib.parse.urlsplit(page_url).hostname
    return url if same or host == "google.com" or host.endswith(".google.com") else None


def _range_start(header: str) -> int | None:
    m = _CONTENT_RANGE.search(header)
    return int(m.group(1)) if m and m.group(1) else None


def _range_total(header: str) -> int | None:
    m = _CONTENT_RANGE.search(header)
    if not m:
        return None
    value = m.group(4) or m.group(3)
    return int(value) if value and value.isdigit() else None


def _describe_http(e: urllib.error.HTTPError) -> str:
    hint = ""
    if e.code in (401, 403):
        hint = " (the host refuses this client; set HF_TOKEN if it is a gated Hub repository)"
    elif e.code == 400:
        hint = " (some hosts answer 400 to hotlinks without a Referer)"
    return f"HTTP {e.code} {e.reason}{hint}"


def _progress_bar(name: str, total: int | None, initial: int, progress: bool) -> tqdm:
    """Size, rate and time left on a terminal; nothing elsewhere (logs stay readable)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=None if progress else True,
    )


def _hash_into(path: Path, digest) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_into(path, digest)
    return digest.hexdigest()


def _read_meta(meta: Path) -> dict:
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_meta(meta: Path, data: dict) -> None:
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(data))


def _discard(dest: Path) -> None:
    for path in part_paths(dest):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
