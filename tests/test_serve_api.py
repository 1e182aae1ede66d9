"""The web service's API in process, its workers the processes production runs, on the toy pair."""

import json
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from extras import require

require("fastapi", "web")
require("uvicorn", "web")

from vqclip.generate.config import OPTION_NAMES, GenerateConfig  # noqa: E402
from vqclip.output import read_image_metadata  # noqa: E402
from vqclip.serve.app import create_app  # noqa: E402
from vqclip.serve.service import ServeSettings  # noqa: E402
from vqclip.serve.store import JobStore  # noqa: E402

with warnings.catch_warnings():  # starlette's note that it prefers httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

JOB = {"prompt": "a red circle", "model": "toy", "size": [16, 16], "iterations": 4, "cutn": 4}
JOB |= {"seed": 3, "video": False}


@pytest.fixture
def serve(tmp_path):
    """serve(workers=1, **settings) -> a TestClient of an app on tmp_path/data whose worker
    processes (the ones `vqclip serve` starts) run the jobs with the packaged toy models;
    every app is shut down after the test."""
    clients = []

    def make(workers=1, data="data", **settings):
        app = create_app(ServeSettings(data=tmp_path / data, workers=workers, **settings))
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    def stop(client):
        clients.remove(client)
        client.__exit__(None, None, None)

    make.stop = stop
    yield make
    for client in clients:
        client.__exit__(None, None, None)


def wait(client, job_id, statuses=("done", "failed", "cancelled"), timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def events(client, job_id):
    """(event, data) pairs of a job's stream until its end."""
    seen, name = [], None
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                seen.append((name, json.loads(line.removeprefix("data: "))))
                if name == "end":
                    return seen
    return seen


def pixels(client, url):
    import io

    response = client.get(url)
    assert response.status_code == 200
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_a_job_runs_streams_its_progress_and_serves_its_files(serve):
    client = serve()
    answer = client.post("/api/jobs", json={**JOB, "video": True})
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["status"] in ("queued", "running") and answer.headers["location"].endswith(job["id"])
    seen = events(client, job["id"])
    kinds = [kind for kind, _ in seen]
    steps = [data["step"] for kind, data in seen if kind == "progress" and data["step"]]
    assert steps == sorted(steps) and steps[-1] == 4
    assert "preview" in kinds and kinds[-1] == "end" and seen[-1][1]["status"] == "done"
    preview = next(data for kind, data in seen if kind == "preview")
    assert client.get(preview["url"]).headers["content-type"] == "image/png"

    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["step"] == 4 and done["error"] is None and done["can_continue"]
    png = client.get(done["urls"]["images"][0])
    (tmp := client.app.state.service.data / "copy.png").write_bytes(png.content)
    meta = read_image_metadata(tmp)
    assert meta["config"]["seed"] == 3 and meta["config"]["prompts"] == ["a red circle"]
    assert client.get(done["urls"]["video"]).content[4:8] == b"ftyp"
    settings = client.get(done["urls"]["settings"]).json()
    assert GenerateConfig.from_dict(settings).iterations == 4 and settings["size"] == [16, 16]
    assert client.get(done["urls"]["thumbnail"]).headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**JOB, "iterations": 0}, "iterations=0: must be at least 1"),
        ({**JOB, "size": "big"}, "size='big'"),
        ({**JOB, "cut_method": "zoom"}, "choose from"),
        ('{"prompt": "a", "lr": 1e999}', "lr=inf"),
        ({**JOB, "colour": "red"}, "unknown settings ['colour']"),
        ({**JOB, "prompt": "  "}, "a prompt is empty"),
        ({**JOB, "model": "huge"}, "unknown model pair 'huge'"),
        ({**JOB, "device": "cuda:3"}, "the server runs each job on a worker's device"),
        ({**JOB, "video": "yes"}, "video='yes'"),
        ([1, 2], "a job is a JSON object"),
    ],
)
def test_bad_options_are_422_with_the_configs_own_message(serve, body, message):
    raw = body if isinstance(body, str) else json.dumps(body)
    headers = {"content-type": "application/json"}
    answer = serve(workers=0).post("/api/jobs", content=raw, headers=headers)
    assert answer.status_code == 422
    assert message in answer.json()["detail"]


def test_bodies_that_are_not_json_or_too_large_are_refused(serve):
    client = serve(workers=0, max_body_bytes=1000)
    not_json = client.post("/api/jobs", content=b"prompt=x", headers={"content-type": "text/plain"})
    assert not_json.status_code == 415
    broken = client.post("/api/jobs", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["detail"]
    huge = client.post("/api/jobs", json={**JOB, "prompt": "x" * 2000})
    assert huge.status_code == 413
    assert client.get("/api/jobs").json()["jobs"] == []


def test_model_files_on_the_server_need_the_operators_consent(serve, tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not read")
    body = {**JOB, "vqgan": str(weights)}
    refused = serve(workers=0).post("/api/jobs", json=body)
    assert refused.status_code == 422 and "--allow-model-paths" in refused.json()["detail"]
    allowed = serve(workers=0, data="other", allow_model_paths=True).post("/api/jobs", json=body)
    assert allowed.status_code == 201 and allowed.json()["settings"]["vqgan"] == str(weights)


def test_a_prior_on_the_server_is_refused_as_a_model_path_is(serve, tmp_path):
    prior = tmp_path / "prior.ckpt"
    prior.write_bytes(b"not read")
    yaml = tmp_path / "prior.yaml"
    yaml.write_text("model: {}\n")
    client = serve(workers=0)
    for body, option in (
        ({**JOB, "prior": str(prior)}, "prior"),
        ({**JOB, "prior_config": str(yaml)}, "prior_config"),
    ):
        refused = client.post("/api/jobs", json=body)
        assert refused.status_code == 422, body
        assert (
            refused.json()["detail"].startswith(option)
            and "--allow-model-paths" in (refused.json()["detail"])
        )
    assert client.get("/api/jobs").json()["jobs"] == []
    # the packaged prior is a name, not a path: the toy pair names it and is taken
    assert client.post("/api/jobs", json={**JOB, "prior": "toy_masked_prior"}).status_code == 201


def test_a_registry_prior_is_not_downloaded_on_a_request(serve, monkeypatch, tmp_path):
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path / "empty-cache"))  # nothing downloaded
    client = serve(workers=0, allow_downloads=False)
    refused = client.post("/api/jobs", json={**JOB, "prior": "faceshq"})
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("prior='faceshq'")
    assert "--allow-downloads" in refused.json()["detail"]


def _png(size=(8, 8), colour=(200, 30, 30)):
    import io

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_come_from_uploads_checked_and_stored_under_their_hash(serve, tmp_path):
    client = serve(workers=0, max_upload_bytes=10_000)
    answer = client.post("/api/uploads", content=_png())
    assert answer.status_code == 201
    ref = answer.json()["ref"]
    assert ref.startswith("uploads/") and client.get(answer.json()["url"]).status_code == 200
    job = client.post("/api/jobs", json={**JOB, "init_image": ref, "image_prompts": [f"{ref}:0.5"]})
    assert job.status_code == 201, job.text
    settings = job.json()["settings"]
    # The job shows its uploads by ref, not by the server's path (the store keeps the path).
    assert settings["init"] == "image" and settings["init_image"] == ref
    assert settings["image_prompts"] == [f"{ref}:0.5:-inf"]
    uploads = client.app.state.service.uploads_dir
    assert JobStore(uploads.parent / "jobs.sqlite3").get(job.json()["id"]).config[
        "init_image"
    ] == str(uploads / ref[8:])
    again = client.post("/api/jobs", json=json.loads(json.dumps(settings)))  # a rerun
    assert again.status_code == 201, again.text

    assert client.post("/api/uploads", content=b"GIF89a nonsense").status_code == 422
    noise = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    import io

    big = io.BytesIO()
    Image.fromarray(noise).save(big, format="PNG")
    assert client.post("/api/uploads", content=big.getvalue()).status_code == 413
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png())
    for bad in (str(secret), "uploads/../../secret.png", "https://example.com/a.png"):
        for body in ({"init_image": bad}, {"image_prompts": [bad]}):
            answer = client.post("/api/jobs", json={**JOB, **body})
            assert answer.status_code == 422, bad
            assert "POST /api/uploads" in answer.json()["detail"]


def test_file_names_never_come_from_the_request(serve):
    client = serve()
    job = client.post("/api/jobs", json=JOB).json()
    wait(client, job["id"])
    base = f"/api/jobs/{job['id']}/files/"
    assert client.get(base + "image.png").status_code == 200
    for name in ("..%2Fjobs.sqlite3", "%2E%2E%2F%2E%2E%2Fjobs.sqlite3", "run", "state.bin"):
        assert client.get(base + name).status_code == 404, name
    assert client.get("/api/jobs/..%2F..%2Fjobs.sqlite3/files/image.png").status_code == 404
    assert client.get("/api/uploads/..%2Fjobs.sqlite3").status_code == 404


def test_queue_positions_list_paging_cancel_and_delete(serve):
    client = serve(workers=0)
    ids = [client.post("/api/jobs", json={**JOB, "seed": i}).json()["id"] for i in range(3)]
    assert [client.get(f"/api/jobs/{i}").json()["position"] for i in ids] == [0, 1, 2]
    page = client.get("/api/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["jobs"]] == ids[:0:-1] and page["counts"]["queued"] == 3
    rest = client.get("/api/jobs", params={"limit": 2, "before": page["next"]}).json()
    assert [j["id"] for j in rest["jobs"]] == ids[:1] and rest["next"] is None

    cancelled = client.post(f"/api/jobs/{ids[0]}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert client.get(f"/api/jobs/{ids[1]}").json()["position"] == 0
    assert client.get("/api/jobs", params={"status": "cancelled"}).json()["jobs"][0]["id"] == ids[0]
    assert client.get("/api/jobs", params={"status": "lost"}).status_code == 422
    assert client.delete(f"/api/jobs/{ids[0]}").status_code == 204
    assert client.get(f"/api/jobs/{ids[0]}").status_code == 404
    assert client.get("/api/jobs/0123456789abcdef").status_code == 404


def test_a_running_job_is_cancelled_after_its_step_and_keeps_its_preview(serve):
    client = serve()
    job = client.post("/api/jobs", json={**JOB, "iterations": 100_000}).json()
    deadline = time.monotonic() + 60
    while (client.get(f"/api/jobs/{job['id']}").json()["step"] or 0) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 409  # running
    assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
    ended = wait(client, job["id"])
    assert ended["status"] == "cancelled" and 2 <= ended["step"] < 100_000
    assert ended["urls"]["thumbnail"] and ended["can_continue"]
    assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 200  # again: no change
    done = client.post("/api/jobs", json=JOB).json()
    wait(client, done["id"])
    assert client.post(f"/api/jobs/{done['id']}/cancel").status_code == 409


def test_continue_goes_on_from_the_last_step_to_the_image_of_a_longer_run(serve):
    client = serve()
    first = client.post("/api/jobs", json=JOB).json()
    wait(client, first["id"])
    child = client.post(f"/api/jobs/{first['id']}/continue", json={"iterations": 3})
    assert child.status_code == 201, child.text
    child = wait(client, child.json()["id"])
    assert child["parent"] == first["id"] and child["settings"]["iterations"] == 7
    whole = wait(client, client.post("/api/jobs", json={**JOB, "iterations": 7}).json()["id"])
    assert np.array_equal(
        pixels(client, child["urls"]["images"][0]), pixels(client, whole["urls"]["images"][0])
    )
    bad = client.post(f"/api/jobs/{first['id']}/continue", json={"iterations": 0})
    assert bad.status_code == 422
    # a job whose saved run is gone: said in the page's words, no server path or CLI flag
    import shutil

    shutil.rmtree(client.app.state.service.job_dir(first["id"]) / "run")
    gone = client.post(f"/api/jobs/{first['id']}/continue", json={"iterations": 3})
    assert gone.status_code == 409, gone.text
    detail = gone.json()["detail"]
    assert "cannot be continued" in detail and "/" not in detail.replace(first["id"], "")
    assert "--" not in detail and "state.bin" not in detail


def test_a_job_stopped_by_a_shutdown_resumes_at_the_next_start(serve):
    client = serve(checkpoint_every=1)
    job = client.post("/api/jobs", json={**JOB, "iterations": 100_000}).json()
    deadline = time.monotonic() + 60
    while (client.get(f"/api/jobs/{job['id']}").json()["step"] or 0) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    serve.stop(client)  # a clean shutdown: the job checkpoints and waits
    row = JobStore(client.app.state.service.data / "jobs.sqlite3").get(job["id"])
    assert row.status == "queued" and row.step >= 3

    again = serve(workers=0)  # the same data folder
    assert again.get(f"/api/jobs/{job['id']}").json()["status"] == "queued"


def test_a_failing_job_records_its_error_and_the_next_one_runs(serve):
    client = serve()
    bad = client.post("/api/jobs", json={**JOB, "cuda_graphs": True}).json()  # no CUDA here
    good = client.post("/api/jobs", json=JOB).json()
    failed = wait(client, bad["id"])
    assert failed["status"] == "failed" and "cuda" in failed["error"].lower()
    assert wait(client, good["id"])["status"] == "done"


def test_the_token_guards_the_api_and_the_dialog_hands_it_over_as_a_cookie(serve):
    token = "s3cret; with=odd chars"
    client = serve(workers=0, token=token)
    assert client.get("/").status_code == 200  # the page itself holds nothing
    assert client.get("/api/jobs").status_code == 401
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 401
    wrong = client.post("/session", json={"token": "nope"})
    assert wrong.status_code == 401 and "vqclip_token" not in wrong.headers.get("set-cookie", "")
    assert client.get("/api/jobs").status_code == 401
    # A token in a URL is neither taken nor kept in the history: the page redirects to "/".
    old = client.get("/", params={"token": token}, follow_redirects=False)
    assert old.status_code == 303 and old.headers["location"] == "/"
    assert "set-cookie" not in old.headers and client.get("/api/jobs").status_code == 401
    right = client.post("/session", json={"token": token})
    assert right.status_code == 204 and "httponly" in right.headers["set-cookie"].lower()
    assert client.get("/api/jobs").status_code == 200  # the cookie now


def test_loopback_servers_refuse_other_hosts_and_cross_site_changes(serve):
    client = serve(workers=0, trusted_hosts=("127.0.0.1", "localhost", "::1"))
    local = {"Host": "localhost:8000"}
    assert client.get("/api/jobs", headers=local).status_code == 200
    assert client.get("/api/jobs", headers={"Host": "evil.example:8000"}).status_code == 421
    cross = client.post("/api/jobs", json=JOB, headers={**local, "Origin": "http://evil.example"})
    assert cross.status_code == 403
    same = client.post("/api/jobs", json=JOB, headers={**local, "Origin": "http://localhost:8000"})
    assert same.status_code == 201
    # the scheme is part of the origin: an https page is not this http server's
    https = {**local, "Origin": "https://localhost:8000"}
    assert client.post("/api/jobs", json=JOB, headers=https).status_code == 403
    # unless a TLS proxy in front says the page's scheme is https
    proxied = {**https, "X-Forwarded-Proto": "https"}
    assert client.post("/api/jobs", json=JOB, headers=proxied).status_code == 201


def test_a_change_signed_in_by_the_cookie_must_carry_the_page_s_origin(serve):
    token = "a-token-of-16+chars"
    client = serve(workers=0, token=token)
    client.cookies.set("vqclip_token", token)
    assert client.get("/api/jobs").status_code == 200  # reading with the cookie is fine
    no_origin = client.post("/api/jobs", json=JOB)
    assert no_origin.status_code == 403 and "Origin" in no_origin.json()["detail"]
    page = client.post("/api/jobs", json=JOB, headers={"Origin": "http://testserver"})
    assert page.status_code == 201
    client.cookies.clear()  # a script with the token in its header needs no Origin
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/jobs", json=JOB, headers=bearer).status_code == 201


def test_the_schema_and_the_page_read_every_option_from_the_config(serve):
    client = serve(workers=0)
    options = {f["name"]: f for f in client.get("/api/options").json()}
    assert tuple(options) == OPTION_NAMES
    assert options["iterations"]["schema"]["minimum"] == 1
    assert options["cut_method"]["schema"]["enum"] == ["crowson", "whole", "overview"]
    body = client.get("/openapi.json").json()["paths"]["/api/jobs"]["post"]["requestBody"]
    props = body["content"]["application/json"]["schema"]["properties"]
    assert set(props) == {*OPTION_NAMES, "prompt", "model", "video"}
    assert (
        props["lr"]["exclusiveMinimum"] == 0
        and props["size"]["anyOf"][0]["items"]["maximum"] == 2**15
    )
    info = client.get("/api/info").json()
    assert info["pairs"]["toy"]["ready"] and info["pairs"]["toy"]["defaults"]["size"] == [64, 64]
    assert not info["pairs"]["maskgit"]["ready"]  # the test's cache is empty
    assert info["pairs"]["maskgit"]["defaults"]["prior"] == "maskgit_imagenet_256"
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_a_pair_is_ready_only_with_its_prior_here_too():
    from vqclip.serve.app import pair_ready
    from vqclip.weights.registry import ModelPair

    toy = ("toy_vqgan", ("toy_clip_a",))
    assert pair_ready(ModelPair(*toy, (("prior", "toy_shape_prior"),)))
    assert not pair_ready(ModelPair(*toy, (("prior", "maskgit_imagenet_256"),)))


def test_the_store_puts_interrupted_jobs_back_and_gives_up_on_repeat_offenders(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    a, b, c = (store.admit({"n": i})[0].id for i in range(3))
    for _ in range(3):
        store.claim("w")  # a, b and c run: then the server dies
    store.cancel(c)
    assert sorted(store.recover()) == sorted([a, b])
    assert store.get(c).status == "cancelled"
    assert store.claim("w").id == a  # first in line again
    for _ in range(2):
        store.recover()
        store.claim("w")
    store.recover()
    assert store.get(a).status == "failed" and "3 times" in store.get(a).error
    store.close()


def test_serve_refuses_other_interfaces_without_a_token(monkeypatch, capsys):
    from vqclip.cli import build_parser, main
    from vqclip.cli.serve import settings_from_args

    monkeypatch.delenv("VQCLIP_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "give --token" in capsys.readouterr().err
    assert main(["serve", "--preview-every", "0"]) == 2
    local = settings_from_args(build_parser().parse_args(["serve"]))
    assert local.trusted_hosts == ("127.0.0.1", "localhost", "::1") and local.token is None
    token = "a-token-of-16+chars"
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--token", token])
    exposed = settings_from_args(args)
    assert exposed.token == token and exposed.trusted_hosts is None
    assert local.max_queued == 200
    assert (
        settings_from_args(build_parser().parse_args(["serve", "--max-queued", "0"])).max_queued
        is None
    )
    assert main(["serve", "--max-queued", "-1"]) == 2
    assert "--max-queued=-1" in capsys.readouterr().err


def test_a_second_server_on_the_same_data_is_refused(serve):
    from vqclip.errors import VQClipError

    first = serve(workers=0)
    with pytest.raises(VQClipError, match="another vqclip serve is using"):
        serve(workers=0)
    serve.stop(first)
    assert serve(workers=0).get("/api/jobs").status_code == 200


def test_a_retried_submit_with_its_idempotency_key_gets_the_first_job(serve):
    client = serve(workers=0)
    key = {"Idempotency-Key": "3f1c2a9e-retry"}
    first = client.post("/api/jobs", json=JOB, headers=key)
    again = client.post("/api/jobs", json=JOB, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert client.get("/api/info").json()["counts"]["queued"] == 1
    other = client.post("/api/jobs", json={**JOB, "seed": 4}, headers=key)
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")
    fresh = client.post("/api/jobs", json=JOB, headers={"Idempotency-Key": "another"})
    assert fresh.json()["id"] != first.json()["id"]
    bad = client.post("/api/jobs", json=JOB, headers={"Idempotency-Key": "has a space"})
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["detail"]
    # a deleted job's key is free again: a later request with it is a new request
    assert client.delete(f"/api/jobs/{first.json()['id']}").status_code == 204
    after = client.post("/api/jobs", json=JOB, headers=key)
    assert after.status_code == 201 and "idempotent-replayed" not in after.headers


def test_concurrent_retries_with_one_key_make_one_job(serve):
    from concurrent.futures import ThreadPoolExecutor

    client = serve(workers=0)
    key = {"Idempotency-Key": "burst"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: client.post("/api/jobs", json=JOB, headers=key), range(8))
        )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert client.get("/api/info").json()["counts"]["queued"] == 1


def test_a_full_queue_refuses_with_429_and_retry_after(serve):
    client = serve(workers=0, max_queued=2)
    ids = [client.post("/api/jobs", json=JOB).json()["id"] for _ in range(2)]
    full = client.post("/api/jobs", json=JOB)
    assert full.status_code == 429
    assert int(full.headers["retry-after"]) >= 1
    problem = full.json()
    assert problem["type"].endswith("/queue-full") and "2 jobs are waiting" in problem["detail"]
    assert client.get("/api/info").json()["counts"]["queued"] == 2
    # a retry of an accepted request is still answered: it makes no new job
    keyed = client.post("/api/jobs", json=JOB, headers={"Idempotency-Key": "k"})
    assert keyed.status_code == 429
    client.post(f"/api/jobs/{ids[0]}/cancel")
    assert client.post("/api/jobs", json=JOB).status_code == 201


def test_errors_are_problem_details_everywhere(serve):
    client = serve(workers=0)
    bad = client.post("/api/jobs", json={**JOB, "cutn": 0})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    problem = bad.json()
    assert problem["status"] == 422 and problem["field"] == "cutn"
    assert problem["errors"] == [{"pointer": "/cutn", "detail": problem["detail"]}]
    kind = client.get(problem["type"])
    assert kind.status_code == 200 and kind.json()["title"] == problem["title"]
    prompt = client.post("/api/jobs", json={**JOB, "prompt": "a:1:2:3:4"}).json()
    assert prompt.get("field") in ("prompts", None)
    answers = {
        "unknown path": client.get("/api/nothing-here"),
        "unknown job": client.get("/api/jobs/0123456789abcdef"),
        "query out of range": client.get("/api/jobs?limit=0"),
        "method": client.delete("/api/info"),
        "not json": client.post("/api/jobs", content=b"x", headers={"content-type": "text/plain"}),
        "bad json": client.post(
            "/api/jobs", content=b"{", headers={"content-type": "application/json"}
        ),
        "unknown kind": client.get("/api/problems/nope"),
    }
    for what, answer in answers.items():
        assert answer.status_code >= 400, what
        assert answer.headers["content-type"] == "application/problem+json", what
        body = answer.json()
        assert body["status"] == answer.status_code and body["detail"] and body["title"], what
    assert answers["query out of range"].json()["field"] == "limit"
    assert answers["method"].status_code == 405
    schema = client.get("/openapi.json").json()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            for status, response in operation.get("responses", {}).items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], (
                        path,
                        method,
                        status,
                    )


def test_unknown_query_parameters_are_422_naming_them(serve):
    """docs/web.md: unknown query parameters are errors too, not silently ignored."""
    client = serve(workers=0)
    answer = client.get("/api/jobs?limt=5&colour=red")
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["detail"].startswith("unknown query parameters colour, limt (GET /api/jobs")
    assert "before, limit, status" in problem["detail"] and problem["field"] == "colour"
    assert client.get("/api/jobs?limit=5&status=done").status_code == 200
    assert client.get("/api/info?verbose=1").json()["detail"].endswith("it takes none)")
    # the page's cache-busting ?v= and a preview's ?step= are the file route's own
    for query in ("v=done-4", "step=3"):
        missing = client.get(f"/api/jobs/0123456789abcdef/files/image.png?{query}")
        assert missing.status_code == 404, query
    assert client.get("/?utm_source=x").status_code == 200  # the page takes any


def test_head_of_the_page_answers_as_get_without_a_body(serve):
    client = serve(workers=0)
    get, head = client.get("/"), client.head("/")
    assert get.status_code == head.status_code == 200, head.text
    assert head.content == b"" and get.content
    for name in ("content-type", "content-length", "content-security-policy"):
        assert head.headers[name] == get.headers[name], name


def test_a_retried_continue_makes_one_child(serve):
    client = serve()
    first = client.post("/api/jobs", json=JOB).json()
    wait(client, first["id"])
    key = {"Idempotency-Key": "more-1"}
    url = f"/api/jobs/{first['id']}/continue"
    one = client.post(url, json={"iterations": 2}, headers=key)
    two = client.post(url, json={"iterations": 2}, headers=key)
    assert one.status_code == two.status_code == 201, two.text
    assert one.json()["id"] == two.json()["id"] and two.headers["idempotent-replayed"] == "true"
    jobs = client.get("/api/jobs").json()["jobs"]
    assert [j["parent"] for j in jobs].count(first["id"]) == 1
    folders = [p.name for p in (client.app.state.service.data / "jobs").iterdir()]
    assert sorted(folders) == sorted(j["id"] for j in jobs)
