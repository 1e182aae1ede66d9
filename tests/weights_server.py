"""A real HTTP server on 127.0.0.1 for download tests, with faults made to order.

Each route serves bytes and can misbehave the way real hosts do: answer 5xx first, redirect,
drop the connection midway, trickle or stall, lie about Content-Length, send a web page, demand
a Referer, or stand in for a Hugging Face Hub repository. Every request is logged, so a test can
assert what the client asked for (a Range, an If-Range, a Referer, how many full downloads).
"""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/octet-stream"
    fail_first: list[int] = field(default_factory=list)  # statuses answered before the body
    redirect: tuple[int, str] | None = None  # (status, location)
    drop_after: int | None = None  # close the connection after this many bytes of the body...
    drop_times: int = 1  # ...this many times
    reset: bool = False  # drop with a TCP reset (RST) rather than a clean close
    chunk: int = 1024
    delay_s: float = 0.0  # between chunks: a trickle
    stall_at: int | None = None  # once, sleep stall_s after this many bytes (a stalled host)
    stall_s: float = 0.0
    claimed_length: int | None = None  # a wrong Content-Length
    ranges: bool = True
    etag: str | None = None
    need_referer: str | None = None  # 400 without this Referer (koofr's hotlink protection)
    hub_commit: str | None = None  # answer like the Hub: X-Repo-Commit, ETag = sha256


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    if_range: str | None
    referer: str | None
    authorization: str | None


class FaultyServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet test output
                pass

            def do_HEAD(self) -> None:
                server._handle(self, head=True)

            def do_GET(self) -> None:
                server._handle(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def serve(self, path: str, body: bytes = b"", **kwargs) -> str:
        self.routes[path] = Route(body=body, **kwargs)
        return self.url(path)

    def requests(self, path: str, method: str = "GET") -> list[Seen]:
        return [s for s in self.log if s.path == path and s.method == method]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # the handler

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = h.path.split("?")[0] if h.path.split("?")[0] in self.routes else h.path
        seen = Seen(
            h.command,
            path,
            h.headers.get("Range"),
            h.headers.get("If-Range"),
            h.headers.get("Referer"),
            h.headers.get("Authorization"),
        )
        with self._lock:
            self.log.append(seen)
        route = self.routes.get(path)
        if route is None:
            return self._simple(h, 404, b"not found", head)
        with self._lock:
            status = route.fail_first.pop(0) if route.fail_first else None
        if status is not None:
            return self._simple(h, status, b"try later", head)
        if route.redirect is not None:
            code, location = route.redirect
            h.send_response(code)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        if route.need_referer is not None and seen.referer != route.need_referer:
            return self._simple(h, 400, b"Hotlinking not allowed", head)
        self._body(h, route, seen, head)
        return None

    def _simple(self, h, status: int, body: bytes, head: bool) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _body(self, h, route: Route, seen: Seen, head: bool) -> None:
        body, start = route.body, 0
        etag = route.etag
        if route.hub_commit is not None:
            etag = f'"{hashlib.sha256(body).hexdigest()}"'
        m = re.fullmatch(r"bytes=(\d+)-", seen.range or "")
        if m and route.ranges and (seen.if_range is None or seen.if_range == etag):
            start = int(m.group(1))
            if start >= len(body):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(body)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            h.send_response(200)
        h.send_header("Content-Type", route.content_type)
        length = route.claimed_length if route.claimed_length is not None else len(body) - start
        h.send_header("Content-Length", str(length))
        if route.ranges:
            h.send_header("Accept-Ranges", "bytes")
        if etag:
            h.send_header("ETag", etag)
        if route.hub_commit is not None:
            h.send_header("X-Repo-Commit", route.hub_commit)
        h.end_headers()
        if head:
            return
        self._send(h, route, body, start)

    def _send(self, h, route: Route, body: bytes, start: int) -> None:
        sent = 0
        with self._lock:
            drop = route.drop_after if route.drop_times > 0 else None
            if drop is not None:
                route.drop_times -= 1
        pos = start
        while pos < len(body):
            if drop is not None and sent >= drop:
                if route.reset:  # linger 0: close() sends RST, the client sees a reset
                    linger = struct.pack("ii", 1, 0)
                    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    h.connection.close()
                h.close_connection = True
                return
            if route.stall_at is not None and pos >= route.stall_at:
                route.stall_at = None
                time.sleep(route.stall_s)
            piece = body[pos : pos + route.chunk]
            if drop is not None:
                piece = piece[: drop - sent]
            try:
                h.wfile.write(piece)
                h.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            pos += len(piece)
            sent += len(piece)
            if route.delay_s:
                time.sleep(route.delay_s)
        if route.claimed_length is not None and route.claimed_length != len(body) - start:
            h.close_connection = True


# a tiny model served by such a server

PAYLOAD = bytes(range(256)) * 200  # 51 kB: fifty 1 kB chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
YAML = b"model: {}\n"


def tiny_spec(ckpt_urls, *, sha256=None, yaml_url=None, referer=None, name="tiny_vqgan"):
    """A two-file VQGAN spec whose checkpoint comes from `ckpt_urls` in order."""
    from vqclip.weights.registry import FileSpec, Host, WeightSpec

    hosts = tuple(Host(url=u, referer=referer) for u in ckpt_urls)
    ckpt = FileSpec("checkpoint", "tiny.ckpt", hosts=hosts, sha256=sha256,
                    sha256_note="" if sha256 else "test file")  # fmt: skip
    yaml_hosts = (Host(url=yaml_url or ckpt_urls[0].rsplit("/", 1)[0] + "/tiny.yaml"),)
    config = FileSpec("config", "tiny.yaml", hosts=yaml_hosts, sha256_note="test file")
    return WeightSpec(name, "vqgan", (config, ckpt), "MIT", "test model")
