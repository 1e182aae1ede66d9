"""The page's helpers in the API: how a prompt is read (`POST /api/prompts/parse`, the package's
own parser and CLIP's tokenizer), and the gallery's routes: search by prompt, jobs by id, a zip
of a selection (streamed, whole even when its jobs are deleted or the server stops while it is
sent), cancel all queued, delete failed."""

import http.client
import io
import os
import signal
import socket
import time
import zipfile
from pathlib import Path

import pytest

from extras import require

require("fastapi", "web")
require("uvicorn", "web")

from test_serve_api import JOB, serve, wait  # noqa: E402, F401 (the fixture)
from test_serve_crash import ServerProcess  # noqa: E402
from vqclip.errors import ConfigError  # noqa: E402
from vqclip.generate.config import build_config  # noqa: E402
from vqclip.jobs import IMAGE_FILE  # noqa: E402
from vqclip.serve.gallery import stream_zip  # noqa: E402
from vqclip.serve.store import JobStore  # noqa: E402

TOKEN = "a-token-of-16+chars"
# 30 words of one CLIP token each
COLOURS = [
    "red",
    "green",
    "blue",
    "black",
    "white",
    "grey",
    "pink",
    "gold",
    "brown",
    "orange",
    "yellow",
    "purple",
    "silver",
    "dark",
    "light",
    "small",
    "large",
    "tall",
    "short",
    "old",
    "new",
    "young",
    "happy",
    "sad",
    "big",
    "little",
    "round",
    "square",
    "bright",
    "calm",
]


def parse(client, body, **kw):
    return client.post("/api/prompts/parse", json=body, **kw)


def test_a_prompt_is_read_into_story_parts_weights_stops_and_tokens(serve):  # noqa: F811
    client = serve(workers=0)
    answer = parse(client, {"prompt": "a red barn:2|fog:-0.5:0.3 ^ a castle", "model": "toy"})
    assert answer.status_code == 200, answer.text
    reading = answer.json()
    assert reading["error"] is None
    assert (reading["context_length"], reading["readable_tokens"]) == (24, 22)  # the toy CLIPs'
    (string,) = reading["prompts"]
    first, second = string["parts"]
    assert first["text"] == "a red barn:2|fog:-0.5:0.3"
    barn, fog = first["prompts"]
    assert (barn["text"], barn["weight"], barn["stop"], barn["tokens"]) == (
        "a red barn",
        2,
        None,
        3,
    )
    assert (fog["text"], fog["weight"], fog["stop"]) == ("fog", -0.5, "0.3")
    assert [p["text"] for p in second["prompts"]] == ["a castle"]
    assert not any(p["cut"] for part in string["parts"] for p in part["prompts"])


def test_a_text_longer_than_clip_reads_is_shown_cut_for_the_models_clips(serve):  # noqa: F811
    client = serve(workers=0)
    words = " ".join(COLOURS)  # 30 words of one token each
    toy = parse(client, {"prompt": words, "model": "toy"}).json()
    (long,) = toy["prompts"][0]["parts"][0]["prompts"]
    assert (long["tokens"], long["kept"], long["cut"]) == (30, 22, True)
    assert long["kept_text"] == " ".join(COLOURS[:22])
    # ViT-B/32 reads 75: the same text is whole there, and with the pair's CLIPs named instead
    default = parse(client, {"prompt": words}).json()["prompts"][0]["parts"][0]["prompts"][0]
    assert (default["kept"], default["cut"], default["kept_text"]) == (30, False, None)
    named = parse(client, {"prompt": words, "model": "toy", "clip": ["clip_vit_b32_openai"]})
    assert named.json()["readable_tokens"] == 75


@pytest.mark.parametrize("prompt", ["a cat:1|", "a forest ^  ^ a castle", "a cat:0", "   |x"])
def test_a_prompt_that_cannot_run_gives_the_generators_own_error(serve, prompt):  # noqa: F811
    reading = parse(serve(workers=0), {"prompt": prompt, "model": "toy"}).json()
    with pytest.raises(ConfigError) as refused:
        build_config({"prompt": prompt, "model": "toy"})
    assert reading["prompts"] == [] and reading["error"] == str(refused.value)


def test_parse_requests_are_checked_documented_and_need_the_token(serve):  # noqa: F811
    client = serve(workers=0)
    assert parse(client, {"prompt": ""}).json()["prompts"] == [{"text": "", "parts": []}]
    for body, message in [
        ({"prompt": 3}, "give a string"),
        ({"prompt": "a", "model": "huge"}, "choose a pair"),
        ({"prompt": "a", "model": ["toy"]}, "choose a pair"),  # found by the fuzzer: was a 500
        ({"prompt": "a", "colour": "red"}, "unknown field(s) 'colour'"),
        ({"prompt": "a" * 2001}, "too long to read here"),
        ({"prompt": ["a" * 1000] * 3}, "2000 characters in all"),
        ({"prompt": "a", "clip": []}, "CLIP names"),
        (["a"], "JSON object"),
    ]:
        answer = parse(client, body)
        assert answer.status_code == 422 and message in answer.json()["detail"], body
    text = client.post("/api/prompts/parse", content=b"a", headers={"content-type": "text/plain"})
    assert text.status_code == 415

    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/api/prompts/parse"]["post"]
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    assert request["required"] == ["prompt"] and "model" in request["properties"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    answer_schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"context_length", "readable_tokens", "prompts", "error"} <= set(
        answer_schema["properties"]
    )

    guarded = serve(workers=0, data="guarded", token=TOKEN)
    assert parse(guarded, {"prompt": "a"}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert parse(guarded, {"prompt": "a"}, headers=auth).status_code == 200
    for path in ("/api/gallery", "/api/gallery/zip?ids=0123456789abcdef"):
        assert guarded.get(path).status_code == 401
    assert guarded.post("/api/gallery/cancel-queued").status_code == 401


def _add(client, prompt, **settings):
    answer = client.post("/api/jobs", json={**JOB, "prompt": prompt, **settings})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def test_the_gallery_finds_jobs_by_every_word_of_their_prompt(serve):  # noqa: F811
    client = serve(workers=0)
    red = _add(client, "a red circle")
    _add(client, "a blue square")
    star = _add(client, "A RED star:2|fog:-1")
    cafe = _add(client, "Un café à Paris")

    def found(**params):
        page = client.get("/api/gallery", params=params).json()
        return [job["id"] for job in page["jobs"]], page["next"]

    assert found(q="red") == ([star, red], None)  # newest first, any case
    assert found(q="star red") == ([star], None)  # every word, in any order
    assert found(q="CAFÉ") == ([cafe], None)
    assert found(q="green") == ([], None)
    assert found(q="red", status="done") == ([], None)
    first, after = found(q="red", limit=1)
    assert first == [star] and found(q="red", limit=1, before=after) == ([red], None)
    assert len(found()[0]) == 4
    assert found(ids=f"{cafe},{red},{red}")[0] == [cafe, red]  # in the order asked, once each
    assert found(ids="0123456789abcdef")[0] == []  # unknown: left out
    for bad in ("nope", " ", ",".join(f"{i:016x}" for i in range(201))):
        assert client.get("/api/gallery", params={"ids": bad}).status_code == 422, bad
    assert client.get("/api/gallery", params={"status": "lost"}).status_code == 422


def test_a_selection_downloads_as_a_zip_of_its_finished_images_only(serve):  # noqa: F811
    client = serve()
    one = _add(client, "a red circle")
    pair = _add(client, "Two stars", batch_size=2, seed=4)
    failed = _add(client, "a blue square", cuda_graphs=True)  # CUDA graphs without CUDA: fails
    for job_id in (one, pair):
        assert wait(client, job_id)["status"] == "done"
    assert wait(client, failed)["status"] == "failed"

    answer = client.get("/api/gallery/zip", params={"ids": f"{failed},{one},{pair}"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    assert "attachment" in answer.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    names = archive.namelist()
    assert names == [
        f"a-red-circle-{one}.png",
        f"two-stars-{pair}_0.png",
        f"two-stars-{pair}_1.png",
    ]
    folder = client.app.state.service.jobs_dir
    assert archive.read(names[0]) == (folder / one / "image.png").read_bytes()
    assert archive.read(names[2]) == (folder / pair / "image_1.png").read_bytes()
    assert archive.testzip() is None

    nothing = client.get("/api/gallery/zip", params={"ids": failed})
    assert nothing.status_code == 404 and "finished image" in nothing.json()["detail"]
    assert client.get("/api/gallery/zip", params={"ids": "x"}).status_code == 422


def test_a_selection_of_hundreds_of_jobs_downloads_by_post_with_its_ids_in_the_body(serve):  # noqa: F811
    client = serve(workers=0)
    service = client.app.state.service
    images = [f"image {i}".encode() for i in range(250)]
    ids = [_finished_job(service.store, service.jobs_dir, image) for image in images]
    queued = _add(client, "a queued job")
    # 250 ids are over 4 KB: more than a query string takes
    assert client.get("/api/gallery/zip", params={"ids": ",".join(ids)}).status_code == 422
    over = client.get("/api/gallery/zip", params={"ids": ",".join(f"{i:016x}" for i in range(201))})
    assert over.status_code == 422 and "POST" in over.json()["detail"]

    answer = client.post("/api/gallery/zip", json={"ids": [queued, *ids, ids[0]]})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    assert answer.headers["content-disposition"] == 'attachment; filename="vqclip-250-images.zip"'
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert archive.namelist() == [f"a-finished-job-{job_id}.png" for job_id in ids]
    assert [archive.read(name) for name in archive.namelist()] == images
    assert archive.testzip() is None

    def refused(status: int, words: str, **request) -> None:
        answer = client.post("/api/gallery/zip", **request)
        assert answer.status_code == status, answer.text
        assert words in answer.json()["detail"], answer.json()

    refused(415, "JSON", content=",".join(ids), headers={"Content-Type": "text/plain"})
    refused(422, "not valid JSON", content="{", headers={"Content-Type": "application/json"})
    refused(422, "give a JSON object", json=ids)
    refused(422, "unknown field(s) 'name'", json={"ids": ids[:1], "name": "x"})
    refused(422, "give a list of job ids", json={"ids": ",".join(ids)})
    refused(422, "give a list of job ids", json={"ids": [1, 2]})
    refused(422, "give 1 to 10000 job ids", json={"ids": []})
    refused(422, "give 1 to 10000 job ids", json={"ids": [f"{i:016x}" for i in range(10001)]})
    refused(422, "'nope' is not a job id", json={"ids": [ids[0], "nope"]})
    refused(404, "none of these jobs has a finished image", json={"ids": [queued]})
    # The guard's rules for every POST: the same origin only, the token where one is set.
    refused(403, "cross-origin", json={"ids": ids}, headers={"Origin": "http://elsewhere.example"})
    same = client.post(
        "/api/gallery/zip", json={"ids": ids[:1]}, headers={"Origin": "http://testserver"}
    )
    assert same.status_code == 200
    guarded = serve(workers=0, data="guarded", token=TOKEN)
    assert guarded.post("/api/gallery/zip", json={"ids": ids[:1]}).status_code == 401

    spec = client.get("/openapi.json").json()["paths"]["/api/gallery/zip"]
    body = spec["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["ids"] and body["properties"]["ids"]["maxItems"] == 10000
    assert "get" in spec


def test_the_zip_is_written_as_it_is_sent(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(bytes(range(256)) * (3 * 2**20 // 256))  # 3 MiB
    small = tmp_path / "small.png"
    small.write_bytes(b"small")
    pieces = stream_zip([(big, "big.png"), (small, "small.png")])
    first = next(pieces)
    assert first.startswith(b"PK\x03\x04") and len(first) < 2**20 + 200  # one chunk, not a file
    rest = list(pieces)
    assert sum(len(p) > 0 for p in rest) >= 3
    archive = zipfile.ZipFile(io.BytesIO(first + b"".join(rest)))
    assert archive.read("big.png") == big.read_bytes() and archive.read("small.png") == b"small"


def _finished_job(store, jobs_dir, image: bytes) -> str:
    """A done job whose image.png holds `image`, as a worker would leave it."""
    row, _ = store.admit({"prompts": ["a finished job"], "batch_size": 1})
    assert store.claim("worker-0").id == row.id
    store.finish(row.id, "done", 1)
    (jobs_dir / row.id).mkdir(parents=True)
    (jobs_dir / row.id / IMAGE_FILE).write_bytes(image)
    return row.id


def test_a_job_deleted_while_a_zip_reads_it_keeps_its_files_until_the_zip_is_done(serve):  # noqa: F811
    client = serve(workers=0)
    service = client.app.state.service
    job = _finished_job(service.store, service.jobs_dir, b"an image")
    release = service.hold_files([job])
    assert client.delete(f"/api/jobs/{job}").status_code == 204
    assert client.get(f"/api/jobs/{job}").status_code == 404  # gone from the API at once
    assert (service.job_dir(job) / IMAGE_FILE).read_bytes() == b"an image"
    release()
    release()  # a second release changes nothing
    assert not service.job_dir(job).exists()

    other = _finished_job(service.store, service.jobs_dir, b"another")
    assert client.get("/api/gallery/zip", params={"ids": other}).status_code == 200
    assert client.delete(f"/api/jobs/{other}").status_code == 204
    assert not service.job_dir(other).exists()  # a zip that was sent holds nothing
    nothing = client.get("/api/gallery/zip", params={"ids": other})
    assert nothing.status_code == 404


def _zip_server(tmp_path, images: list[bytes]) -> tuple[Path, list[str]]:
    """A data folder holding a done job for each of `images`, for a real server."""
    data = tmp_path / "data"
    store = JobStore(data / "jobs.sqlite3")
    ids = [_finished_job(store, data / "jobs", image) for image in images]
    store.close()
    return data, ids


def _start_zip(server: ServerProcess, ids: list[str]) -> http.client.HTTPResponse:
    """GET the zip of `ids` on a connection that reads slowly (a small receive buffer), so the
    server is still writing the zip when this returns."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    port = int(server.url.rsplit(":", 1)[1])
    sock.connect(("127.0.0.1", port))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.sock = sock
    conn.request("GET", "/api/gallery/zip?ids=" + ",".join(ids))
    answer = conn.getresponse()
    assert answer.status == 200
    return answer


# Images larger than the socket buffers between server and client hold: the zip is mid-way
# when its jobs are deleted, or the server stopped.
_IMAGES = [os.urandom(6 * 2**20) for _ in range(3)]


def test_deleting_the_jobs_of_a_zip_being_sent_leaves_the_zip_whole(tmp_path):
    data, ids = _zip_server(tmp_path, _IMAGES)
    with ServerProcess(data, "--workers", "0") as server:
        answer = _start_zip(server, ids)
        first = answer.read(1000)
        for job_id in ids:
            assert server.http.delete(f"/api/jobs/{job_id}").status_code == 204
        archive = zipfile.ZipFile(io.BytesIO(first + answer.read()))
        assert archive.testzip() is None
        assert [archive.read(name) for name in archive.namelist()] == _IMAGES
        deadline = time.monotonic() + 10
        while any((data / "jobs" / job_id).exists() for job_id in ids):  # once the zip is done
            assert time.monotonic() < deadline, "the deleted jobs' files stayed"
            time.sleep(0.05)
        assert "Traceback" not in server.output()


@pytest.mark.slow
def test_a_zip_cut_off_by_a_shutdown_fails_visibly_without_a_traceback(tmp_path):
    data, ids = _zip_server(tmp_path, _IMAGES)
    with ServerProcess(data, "--workers", "0") as server:
        answer = _start_zip(server, ids)
        answer.read(1000)  # then stalls, past the server's grace period for open responses
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(60)
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            answer.read()  # not a whole-looking zip: the download fails
        log = server.output()
    assert "Traceback" not in log and "cut off by the shutdown" in log


def test_cancel_all_queued_leaves_running_jobs_and_delete_failed_removes_only_failed(serve):  # noqa: F811
    client = serve(workers=0)
    service = client.app.state.service
    store = service.store
    running = _add(client, "a red circle")
    assert store.claim("worker-0").id == running  # as a worker would
    queued = [_add(client, f"queued {i}") for i in range(3)]
    broken = [_add(client, f"broken {i}") for i in range(2)]
    for job_id in broken:
        store.finish(job_id, "failed", 0, "boom")
        (service.job_dir(job_id) / "image.png").parent.mkdir(parents=True, exist_ok=True)

    assert client.post("/api/gallery/cancel-queued").json() == {"cancelled": 3}
    assert [store.get(j).status for j in queued] == ["cancelled"] * 3
    assert store.get(running).status == "running" and not store.get(running).cancel
    assert client.post("/api/gallery/cancel-queued").json() == {"cancelled": 0}

    assert client.post("/api/gallery/delete-failed").json() == {"deleted": 2}
    for job_id in broken:
        assert store.get(job_id) is None and not service.job_dir(job_id).exists()
    assert client.get("/api/jobs").json()["counts"] == {
        "queued": 0,
        "running": 1,
        "done": 0,
        "partial": 0,
        "failed": 0,
        "cancelled": 3,
    }


def test_the_prompt_reading_takes_known_clip_names_only(serve):  # noqa: F811
    client = serve(workers=0)
    for name in ("/etc/passwd", "../toy_clip_a.safetensors", "vqgan_imagenet_f16_1024"):
        answer = parse(client, {"prompt": "a red barn", "clip": [name]})
        assert answer.status_code == 422, name
        assert "not a CLIP this server knows" in answer.json()["detail"]
    assert parse(client, {"prompt": "a red barn", "clip": ["toy_clip_a"]}).status_code == 200
    assert parse(client, {"prompt": "a red barn", "clip": ["ViT-B/32"]}).status_code == 200
