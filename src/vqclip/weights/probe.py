"""Ask a model's hosts whether they still serve its files, without downloading them.

One HEAD request per host with a short timeout (a host that refuses HEAD gets a one-byte
ranged GET), sent as the downloader would send it (Referer, HF_TOKEN for the Hub), so a user
sees a dead or changed host before a 1 GB wait. Hosts are asked in parallel.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vqclip.weights.download import host_url, hub_auth
from vqclip.weights.fetch import build_request
from vqclip.weights.registry import FileSpec, Host, WeightSpec


@dataclass(frozen=True)
class Answer:
    """What one host said about one file."""

    spec: str
    role: str
    host: Host
    ok: bool  # it would serve the file
    reached: bool  # a server answered at all (False: DNS, refused, timeout)
    detail: str  # "200, 980 MB", "HTTP 404 Not Found", "timed out", "a web page"...


def probe(host: Host, timeout: float = 5.0) -> tuple[bool, bool, str]:
    """(ok, reached, detail) for one host."""
    url = host_url(host)
    try:
        response = _ask(url, host.referer, timeout, "HEAD")
    except urllib.error.HTTPError as e:
        if e.code not in (403, 405, 501):
            return False, True, f"HTTP {e.code} {e.reason}"
        try:  # some hosts refuse HEAD; a one-byte ranged GET is the next cheapest question
            response = _ask(url, host.referer, timeout, "GET")
        except urllib.error.HTTPError as e2:
            return False, True, f"HTTP {e2.code} {e2.reason}"
        except (urllib.error.URLError, OSError) as e2:
            return False, False, _why(e2)
    except (urllib.error.URLError, OSError) as e:
        return False, False, _why(e)
    with response:
        kind = (response.headers.get("Content-Type") or "").lower()
        size = _size(response)
        if "text/html" in kind:
            return False, True, f"{response.status}, a web page, not the file"
        return True, True, f"{response.status}" + (f", {_human(size)}" if size else "")


def check_specs(specs: list[WeightSpec], timeout: float = 5.0, workers: int = 8) -> list[Answer]:
    """Every host of every file of `specs`, asked in parallel; answers in registry order."""
    jobs: list[tuple[WeightSpec, FileSpec, Host]] = [
        (spec, f, host) for spec in specs for f in spec.files for host in f.sources
    ]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda job: probe(job[2], timeout), jobs))
    return [
        Answer(spec.name, f.role, host, ok, reached, detail)
        for (spec, f, host), (ok, reached, detail) in zip(jobs, results, strict=True)
    ]


def _ask(url: str, referer: str | None, timeout: float, method: str):
    request = build_request(url, 0, None, referer, hub_auth(url))
    request.method = method
    if method == "GET":
        request.add_header("Range", "bytes=0-0")
    return urllib.request.build_opener().open(request, timeout=timeout)


def _size(response) -> int | None:
    total = (response.headers.get("Content-Range") or "").rpartition("/")[2]
    linked = response.headers.get("X-Linked-Size")  # the Hub's size of an LFS file
    for value in (total, linked, response.headers.get("Content-Length")):
        if value and value.isdigit() and int(value) > 1:
            return int(value)
    return None


def _why(error: BaseException) -> str:
    reason = getattr(error, "reason", error)
    if isinstance(reason, socket.gaierror):
        return "host name does not resolve"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return f"cannot connect: {reason}"


def _human(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
