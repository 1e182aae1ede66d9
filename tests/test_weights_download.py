"""The direct-URL downloader against a real HTTP server on 127.0.0.1 (tests/weights_server.py)
that misbehaves to order: redirects, 503s, dropped and stalled connections, web pages, wrong
Content-Length, a Referer check, Google Drive's confirm page, and two processes at once."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vqclip
from vqclip.errors import ChecksumError, WeightsNotFoundError
from vqclip.weights import cache, fetch
from vqclip.weights.download import Retry, ensure_files
from weights_server import PAYLOAD, PAYLOAD_SHA, YAML, FaultyServer, tiny_spec

FAST = Retry(attempts=3, backoff_s=0.01, timeout_s=2.0)


@pytest.fixture
def server():
    s = FaultyServer()
    s.serve("/tiny.yaml", YAML)
    yield s
    s.close()


def get(spec, **kwargs):
    return ensure_files(spec, progress=False, retry=kwargs.pop("retry", FAST), **kwargs)


def leftovers(spec) -> list[str]:
    folder = cache.model_dir(spec)
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".part.json")))


def child_env() -> dict[str, str]:
    src = str(Path(vqclip.__file__).resolve().parents[1])
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([src, tests, os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


CHILD = """
import sys
from weights_server import tiny_spec
from vqclip.weights.download import Retry, ensure_files
spec = tiny_spec([sys.argv[1]])
paths = ensure_files(spec, progress=False, retry=Retry(attempts=3, backoff_s=0.01, timeout_s=10))
print(paths["checkpoint"])
"""


def spawn(url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url], env=child_env(), stdout=subprocess.PIPE, text=True
    )


# the happy path, and where the bytes go


def test_download_lands_complete_with_hash_and_no_leftovers(server):
    spec = tiny_spec([server.serve("/tiny.ckpt", PAYLOAD)], sha256=PAYLOAD_SHA)
    paths = get(spec)
    assert paths["checkpoint"].read_bytes() == PAYLOAD
    assert cache.read_sidecar(paths["checkpoint"]) == PAYLOAD_SHA
    assert leftovers(spec) == []


def test_a_notice_is_printed_once_before_the_first_download(server, capsys):
    spec = tiny_spec([server.serve("/tiny.ckpt", PAYLOAD)])
    spec = dataclasses.replace(spec, notice="its licence restricts its use")
    get(spec)
    assert capsys.readouterr().err.count("tiny_vqgan: its licence restricts its use\n") == 1
    get(spec)  # both files cached: nothing fetched, nothing printed
    assert "licence" not in capsys.readouterr().err


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_redirects_are_followed(server, code):
    url = server.serve("/old.ckpt", redirect=(code, server.url("/new.ckpt")))
    server.serve("/new.ckpt", PAYLOAD)
    assert get(tiny_spec([url]))["checkpoint"].read_bytes() == PAYLOAD
    assert len(server.requests("/old.ckpt")) == 1 and len(server.requests("/new.ckpt")) == 1


# faults at one host: retried there before the next host


def test_503_then_200_is_retried_at_the_same_host(server):
    primary = server.serve("/tiny.ckpt", PAYLOAD, fail_first=[503, 503])
    mirror = server.serve("/mirror.ckpt", PAYLOAD)
    assert get(tiny_spec([primary, mirror]))["checkpoint"].read_bytes() == PAYLOAD
    assert len(server.requests("/tiny.ckpt")) == 3
    assert server.requests("/mirror.ckpt") == []


def test_a_host_that_keeps_failing_gives_way_to_the_next_after_the_retries(server):
    primary = server.serve("/tiny.ckpt", PAYLOAD, fail_first=[503] * 10)
    mirror = server.serve("/mirror.ckpt", PAYLOAD)
    assert get(tiny_spec([primary, mirror]))["checkpoint"].read_bytes() == PAYLOAD
    assert len(server.requests("/tiny.ckpt")) == FAST.attempts
    assert len(server.requests("/mirror.ckpt")) == 1


def test_404_moves_on_at_once(server):
    mirror = server.serve("/mirror.ckpt", PAYLOAD)
    assert get(tiny_spec([server.url("/gone.ckpt"), mirror]))["checkpoint"].read_bytes() == PAYLOAD
    assert len(server.requests("/gone.ckpt")) == 1


def test_connection_dropped_midway_is_resumed_with_a_range_request(server):
    url = server.serve("/tiny.ckpt", PAYLOAD, drop_after=20_000, etag='"v1"')
    assert get(tiny_spec([url], sha256=PAYLOAD_SHA))["checkpoint"].read_bytes() == PAYLOAD
    first, second = server.requests("/tiny.ckpt")
    assert first.range is None
    assert (second.range, second.if_range) == ("bytes=20000-", '"v1"')


def test_a_connection_reset_midway_is_retried_and_resumed(server):
    # paced, so the client has read what came before the reset (a reset discards unread bytes)
    url = server.serve("/tiny.ckpt", PAYLOAD, drop_after=12_288, reset=True, delay_s=0.005)
    assert get(tiny_spec([url], sha256=PAYLOAD_SHA))["checkpoint"].read_bytes() == PAYLOAD
    _, second = server.requests("/tiny.ckpt")  # the same host again, not the next one
    assert re.fullmatch(r"bytes=[1-9]\d*-", second.range)


def test_a_file_changed_on_the_server_is_fetched_whole_not_spliced(server):
    url = server.url("/tiny.ckpt")
    spec = tiny_spec([url])
    part, meta = fetch.part_paths(cache.own_path(spec, spec.file("checkpoint")))
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:20_000])  # left by an earlier download of version "v1"
    meta.write_text(json.dumps({"url": url, "validator": '"v1"', "total": len(PAYLOAD)}))
    new = bytes(reversed(PAYLOAD))
    server.serve("/tiny.ckpt", new, etag='"v2"')  # If-Range "v1" no longer matches: a 200
    assert get(spec)["checkpoint"].read_bytes() == new
    (request,) = server.requests("/tiny.ckpt")
    assert (request.range, request.if_range) == ("bytes=20000-", '"v1"')


def test_slow_trickle_within_the_timeout_completes_in_one_request(server):
    url = server.serve("/tiny.ckpt", PAYLOAD, chunk=4096, delay_s=0.01)
    assert get(tiny_spec([url]))["checkpoint"].read_bytes() == PAYLOAD
    assert len(server.requests("/tiny.ckpt")) == 1


def test_a_stall_past_the_timeout_is_retried_and_resumed(server):
    url = server.serve("/tiny.ckpt", PAYLOAD, stall_at=30_720, stall_s=2.0)
    retry = Retry(attempts=3, backoff_s=0.01, timeout_s=0.5)
    assert get(tiny_spec([url]), retry=retry)["checkpoint"].read_bytes() == PAYLOAD
    second = server.requests("/tiny.ckpt")[1]
    assert second.range == "bytes=30720-"  # what arrived before the stall was kept


def test_content_length_longer_than_the_body_still_gives_the_right_file(server):
    url = server.serve("/tiny.ckpt", PAYLOAD, claimed_length=len(PAYLOAD) + 500)
    assert get(tiny_spec([url], sha256=PAYLOAD_SHA))["checkpoint"].read_bytes() == PAYLOAD
    assert server.requests("/tiny.ckpt")[-1].range == f"bytes={len(PAYLOAD)}-"  # answered 416


def test_content_length_shorter_than_the_body_is_caught_by_the_pinned_hash(server):
    url = server.serve("/tiny.ckpt", PAYLOAD, claimed_length=len(PAYLOAD) - 500)
    spec = tiny_spec([url], sha256=PAYLOAD_SHA)
    with pytest.raises(WeightsNotFoundError, match=f"expected sha256 {PAYLOAD_SHA}"):
        get(spec)
    assert not cache.own_path(spec, spec.file("checkpoint")).exists()
    assert leftovers(spec) == []


# wrong content


@pytest.mark.parametrize("role", ["checkpoint", "config"])
@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "text/plain"])
def test_a_web_page_in_place_of_any_file_is_refused_naming_the_url(server, role, content_type):
    page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
    if role == "checkpoint":
        ckpt = server.serve("/tiny.ckpt", page, content_type=content_type)
        yaml = server.url("/tiny.yaml")
    else:
        ckpt = server.serve("/tiny.ckpt", PAYLOAD)
        yaml = server.serve("/page.yaml", page, content_type=content_type)
    spec = tiny_spec([ckpt], yaml_url=yaml)
    with pytest.raises(WeightsNotFoundError) as err:
        get(spec)
    bad = ckpt if role == "checkpoint" else yaml
    assert f"web page instead of the file: {bad}" in str(err.value)
    assert not cache.own_path(spec, spec.file(role)).exists()


def test_google_drive_confirm_page_is_followed(server):
    form = (
        "<html><body>Google Drive can't scan this file for viruses."
        f'<form id="download-form" action="{server.url("/download")}" method="get">'
        '<input type="hidden" name="id" value="abc"><input type="hidden" name="confirm" value="t">'
        '<input type="submit" value="Download anyway"></form></body></html>'
    ).encode()
    url = server.serve("/uc", form, content_type="text/html; charset=utf-8")
    server.serve("/download", PAYLOAD)
    assert get(tiny_spec([url]))["checkpoint"].read_bytes() == PAYLOAD
    assert fetch.drive_confirm_url(form, url) == server.url("/download?id=abc&confirm=t")


def test_a_confirm_form_pointing_at_another_host_is_not_followed():
    page = b'<form id="download-form" action="https://evil.example/x"></form>'
    assert fetch.drive_confirm_url(page, "https://drive.google.com/uc?id=1") is None


def test_referer_is_sent_where_the_host_needs_one(server):
    page = server.url("/links/share")
    url = server.serve("/koofr.ckpt", PAYLOAD, need_referer=page)
    assert get(tiny_spec([url], referer=page))["checkpoint"].read_bytes() == PAYLOAD
    assert server.requests("/koofr.ckpt")[0].referer == page
    with pytest.raises(WeightsNotFoundError, match=r"HTTP 400.*Referer"):
        get(tiny_spec([url], name="no_referer"))


# processes


def test_two_processes_download_once_and_both_get_the_file(server):
    url = server.serve("/tiny.ckpt", PAYLOAD, delay_s=0.04)  # ~2 s: the second one waits
    first, second = spawn(url), spawn(url)
    outs = [p.communicate(timeout=60)[0].strip() for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0]
    assert outs[0] == outs[1] and Path(outs[0]).read_bytes() == PAYLOAD
    assert len(server.requests("/tiny.ckpt")) == 1


def test_a_download_killed_with_sigkill_resumes_with_a_range_request(server):
    url = server.serve("/tiny.ckpt", PAYLOAD, delay_s=0.05)  # ~2.5 s in all
    spec = tiny_spec([url])
    part, _ = fetch.part_paths(cache.own_path(spec, spec.file("checkpoint")))
    child = spawn(url)
    deadline = time.monotonic() + 30
    while (not part.exists() or part.stat().st_size < 8192) and time.monotonic() < deadline:
        time.sleep(0.02)
    child.kill()  # SIGKILL: no handler, no cleanup
    child.wait(timeout=10)
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD)
    server.serve("/tiny.ckpt", PAYLOAD)  # the same file, now served fast
    assert get(spec)["checkpoint"].read_bytes() == PAYLOAD
    assert server.requests("/tiny.ckpt")[-1].range == f"bytes={kept}-"


def test_the_host_of_a_partial_file_is_tried_first(server):
    primary = server.serve("/tiny.ckpt", PAYLOAD)
    mirror = server.serve("/mirror.ckpt", PAYLOAD)
    spec = tiny_spec([primary, mirror])
    part, meta = fetch.part_paths(cache.own_path(spec, spec.file("checkpoint")))
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:10_000])  # an earlier download from the mirror stopped here
    meta.write_text(json.dumps({"url": mirror, "validator": None, "total": len(PAYLOAD)}))
    assert get(spec)["checkpoint"].read_bytes() == PAYLOAD
    assert server.requests("/tiny.ckpt") == []
    assert [r.range for r in server.requests("/mirror.ckpt")] == ["bytes=10000-"]


def test_orphaned_partial_files_are_cleaned(server):
    spec = tiny_spec([server.serve("/tiny.ckpt", PAYLOAD)])
    folder = cache.model_dir(spec)
    folder.mkdir(parents=True)
    old = time.time() - 2 * 3600
    orphans = [folder / ".tiny.ckpt.x1y2z3.part", folder / "renamed.ckpt.part"]
    fresh = folder / ".tiny.yaml.a1b2c3.part"  # another process may be writing this one now
    for path in (*orphans, fresh):
        path.write_bytes(b"partial")
    for path in orphans:
        os.utime(path, (old, old))
    get(spec)
    assert not any(p.exists() for p in orphans) and fresh.exists()


def test_progress_bar_shows_size_and_time_left(server, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    url = server.serve("/tiny.ckpt", PAYLOAD)
    ensure_files(tiny_spec([url]), progress=True, retry=FAST)
    out = sys.stderr.getvalue()
    assert "tiny.ckpt" in out and "50.0k/50.0k" in out  # size, in KiB
    assert re.search(r"<\d\d:\d\d", out)  # elapsed<remaining


# offline and cached


@pytest.mark.parametrize("var", ["VQCLIP_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_names_path_url_and_command_without_network(server, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    spec = tiny_spec([server.url("/tiny.ckpt")])
    with pytest.raises(WeightsNotFoundError) as err:
        get(spec)
    message = str(err.value)
    assert str(cache.own_path(spec, spec.file("checkpoint"))) in message
    assert server.url("/tiny.ckpt") in message and server.url("/tiny.yaml") in message
    assert "vqclip models download tiny_vqgan" in message and var in message
    assert server.log == []


def test_cached_files_are_trusted_then_checked_after_a_change(server):
    spec = tiny_spec([server.serve("/tiny.ckpt", PAYLOAD)])
    paths = get(spec)
    fetched = len(server.log)
    assert get(spec) == paths and len(server.log) == fetched  # cached: no network
    ckpt = paths["checkpoint"]
    ckpt.write_bytes(PAYLOAD[:-1] + b"!")  # corrupted in place
    later = cache.sidecar_path(ckpt).stat().st_mtime_ns + 10**9
    os.utime(ckpt, ns=(later, later))
    with pytest.raises(ChecksumError, match="download tiny_vqgan --force"):
        get(spec)
    assert get(spec, force=True)["checkpoint"].read_bytes() == PAYLOAD


def test_hand_placed_file_is_checked_against_the_pin_without_network(server):
    spec = tiny_spec([server.url("/tiny.ckpt")], sha256=PAYLOAD_SHA)
    for f, data in zip(spec.files, (YAML, PAYLOAD), strict=True):
        path = cache.own_path(spec, f)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    get(spec)
    assert server.log == []
    bad = tiny_spec([server.url("/tiny.ckpt")], sha256="1" * 64, name="tiny_bad")
    for f, data in zip(bad.files, (YAML, PAYLOAD), strict=True):
        path = cache.own_path(bad, f)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    with pytest.raises(ChecksumError, match="published"):
        get(bad)


def test_download_false_reports_missing_files(server):
    with pytest.raises(WeightsNotFoundError, match="downloading is turned off"):
        ensure_files(tiny_spec([server.url("/tiny.ckpt")]), download=False)
    assert server.log == []
