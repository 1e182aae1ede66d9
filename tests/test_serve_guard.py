"""What a server others can reach must hold: security headers, the token's length, no model
download on a client's request without the operator's consent, no internal reprs in upload
errors; and the job view's seed string and CLI command line."""

import shlex

import pytest

from extras import require

require("fastapi", "web")
require("uvicorn", "web")

from test_serve_api import JOB, serve, wait  # noqa: E402, F401 (the fixture)
from vqclip.generate.config import build_config  # noqa: E402


def test_every_answer_carries_the_security_headers(serve):  # noqa: F811
    client = serve(workers=0)
    for path in ("/", "/api/jobs", "/static/app.js", "/api/jobs/0123456789abcdef"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    page = client.get("/").text
    assert "<script>" not in page and " on" + "click=" not in page  # nothing inline to allow


@pytest.mark.parametrize("token", ["", "   ", "x", "short-token", " padded-token-of-16 "])
def test_short_or_blank_tokens_are_refused(serve, token):  # noqa: F811
    from vqclip.errors import VQClipError

    with pytest.raises(VQClipError, match="at least 16 characters"):
        serve(workers=0, token=token)


def test_the_cli_refuses_a_short_token(monkeypatch, capsys):
    from vqclip.cli import main

    monkeypatch.delenv("VQCLIP_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--token", "1"]) == 2
    assert "at least 16 characters" in capsys.readouterr().err


def test_downloads_on_request_need_the_operators_flag_on_a_reachable_server(
    serve,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path / "empty-cache"))  # nothing downloaded
    registry = {"prompt": "a red circle", "model": None, "iterations": 2}
    token = "a-token-of-16+chars"
    auth = {"Authorization": f"Bearer {token}"}
    reachable = serve(workers=0, token=token)
    refused = reachable.post("/api/jobs", json=registry, headers=auth)
    assert refused.status_code == 422
    assert "--allow-downloads" in refused.json()["detail"]
    mixed = reachable.post("/api/jobs", json={**JOB, "clip": ["ViT-B/32"]}, headers=auth)
    assert mixed.status_code == 422 and "clip='ViT-B/32'" in mixed.json()["detail"]
    assert reachable.post("/api/jobs", json=JOB, headers=auth).status_code == 201  # packaged
    assert reachable.get("/api/info", headers=auth).json()["allow_downloads"] is False

    allowed = serve(workers=0, data="b", token=token, allow_downloads=True)
    assert allowed.post("/api/jobs", json=registry, headers=auth).status_code == 201
    local = serve(workers=0, data="c", trusted_hosts=("testserver",))  # loopback, no token
    assert local.post("/api/jobs", json=registry).status_code == 201


def test_upload_errors_say_what_is_wrong_without_object_reprs(serve):  # noqa: F811
    client = serve(workers=0)
    png_head = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    for body in (b"not an image at all", b"GIF89a nonsense", png_head):
        answer = client.post("/api/uploads", content=body)
        assert answer.status_code == 422
        detail = answer.json()["detail"]
        assert detail.startswith("upload:") and " at 0x" not in detail and "<" not in detail


def test_big_seeds_travel_as_strings_and_integers_still_work(serve):  # noqa: F811
    client = serve(workers=0)
    big = 2**63 - 1
    as_text = client.post("/api/jobs", json={**JOB, "seed": str(big)})
    assert as_text.status_code == 201, as_text.text
    assert as_text.json()["seed"] == str(big) and as_text.json()["settings"]["seed"] == big
    as_int = client.post("/api/jobs", json={**JOB, "seed": big})
    assert as_int.status_code == 201 and as_int.json()["seed"] == str(big)
    for bad in ("12x", "-1", str(2**63)):
        answer = client.post("/api/jobs", json={**JOB, "seed": bad})
        assert answer.status_code == 422 and "seed" in answer.json()["detail"]


def test_the_command_line_makes_the_same_run(serve):  # noqa: F811
    from vqclip.cli import build_parser
    from vqclip.cli.options import given_options

    client = serve(workers=0)
    body = {**JOB, "prompt": 'it\'s a "quoted" $HOME', "seed": str(2**62 + 1)}
    body |= {"augments": ["Af", "Ji"], "cut_pow": 0.7, "tv_weight": 0.1}
    job = client.post("/api/jobs", json=body).json()
    words = shlex.split(job["command"])
    assert words[:4] == ["vqclip", "generate", "--model", "toy"] and "--device" not in words
    args = build_parser().parse_args(words[1:])
    again = build_config({**given_options(args), "model": args.model})
    body = {k: v for k, v in body.items() if k != "video"}
    assert again.to_dict() == build_config({**body, "seed": 2**62 + 1}).to_dict()


def test_the_eta_follows_the_recent_step_rate():
    from vqclip.serve.live import Progress

    progress = Progress(iterations=100)
    progress.stepped(1, now=0.0)  # the first step carries the warm-up
    now = 0.0
    for step in range(2, 41):  # 1 s steps, then 15 s steps: the ETA speaks of the slow ones
        now += 1.0 if step <= 30 else 15.0
        progress.stepped(step, now=now)
    shown = progress.as_json()
    assert shown["it_s"] == pytest.approx(1 / 15)
    assert shown["eta_s"] == pytest.approx(60 * 15)


def test_a_token_in_a_url_stays_out_of_the_access_log():
    import logging

    from vqclip.cli.serve import _redact_tokens

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', None, None
    )
    record.args = ("127.0.0.1:5", "GET", "/?a=1&token=s3cret-s3cret-s3cret", "1.1", 303)
    assert _redact_tokens(record)
    assert "s3cret" not in record.getMessage() and "token=<hidden>" in record.getMessage()
