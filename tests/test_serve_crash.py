"""`vqclip serve` killed with SIGKILL mid-job: no accepted job is lost, every one finishes, and the
interrupted one, resumed from its run checkpoint, ends with the image of an unbroken run."""

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extras import require

require("fastapi", "web")
require("uvicorn", "web")

CLI = "from vqclip.cli import console; console()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`vqclip serve` in a subprocess on a free loopback port, its output in a log file.
    Torch gets one thread (OMP_NUM_THREADS=1): the toy models at 32 px gain nothing from more."""

    def __init__(self, data, *args: str, startup_s: float = 120) -> None:
        import httpx

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = data.parent / f"serve-{port}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-c", CLI, "serve", "--port", str(port), "--data", str(data)]
        self.proc = subprocess.Popen(
            [*command, *args], stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        self.http = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + startup_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited at start:\n{self.output()}")
            try:
                if self.http.get("/api/info").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no server after {startup_s} s:\n{self.output()}"
            time.sleep(0.2)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.http.close()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def submit(self, job: dict) -> str:
        answer = self.http.post("/api/jobs", json=job)
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/api/jobs/{job_id}").json()

    def wait(self, job_id: str, done=lambda job: job["status"] == "done", timeout: float = 300):
        deadline = time.monotonic() + timeout
        while not done(job := self.job(job_id)):
            assert job["status"] not in ("failed", "cancelled"), job
            assert time.monotonic() < deadline, f"job {job_id}: {job}\n{self.output()}"
            time.sleep(0.1)
        return job

    def pixels(self, url: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.http.get(url).content)))

    def workers(self) -> list[int]:
        """The pids of the server's worker processes (its children that run the spawn entry
        point, not multiprocessing's resource tracker)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.proc.pid and b"spawn_main" in command:
                found.append(int(stat.parent.name))
        return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


JOB = {"prompt": "a red circle on a blue background", "model": "toy", "size": [32, 32]}
JOB |= {"iterations": 30, "cutn": 4, "seed": 11, "video": False}


@pytest.mark.slow
def test_kill_9_mid_job_loses_no_job_and_the_resumed_image_equals_an_unbroken_one(tmp_path):
    data = tmp_path / "data"
    with ServerProcess(data, "--checkpoint-every", "3") as server:
        long = server.submit(JOB)
        short = [server.submit({**JOB, "iterations": 3, "seed": s}) for s in (1, 2)]
        server.wait(long, done=lambda job: job["status"] == "running" and job["step"] >= 8)
        (worker,) = server.workers()
        server.kill()
        deadline = time.monotonic() + 10
        while alive(worker):  # the kernel ends the worker with its server: no orphan writes on
            assert time.monotonic() < deadline, "the worker outlived its server"
            time.sleep(0.05)

    with ServerProcess(data) as again:
        for job_id in (long, *short):
            assert again.wait(job_id)["status"] == "done"
        resumed = again.job(long)
        log = again.output()
        assert f"job {long} resumes from its checkpoint (step " in log
        step = int(log.split(f"job {long} resumes from its checkpoint (step ")[1].split(")")[0])
        assert 6 <= step < 30  # a checkpoint of the killed run, not a restart from step 0
        unbroken = again.wait(again.submit(JOB))
        assert np.array_equal(
            again.pixels(resumed["urls"]["images"][0]), again.pixels(unbroken["urls"]["images"][0])
        )
        listed = {j["id"] for j in again.http.get("/api/jobs").json()["jobs"]}
        assert {long, *short} <= listed


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_that_dies_is_replaced_and_its_job_runs_again(tmp_path):
    with ServerProcess(tmp_path / "data", "--checkpoint-every", "2") as server:
        job = server.submit(JOB)
        server.wait(job, done=lambda job: job["status"] == "running" and job["step"] >= 4)
        (worker,) = server.workers()
        os.kill(worker, signal.SIGKILL)  # as the kernel's out-of-memory killer would
        assert server.wait(job)["status"] == "done"
        assert server.workers() and server.workers() != [worker]
        assert "stopped (exit code -9); starting it again" in server.output()
        assert f"job {job} resumes from its checkpoint" in server.output()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_graceful_stop_after_a_worker_was_replaced_keeps_the_jobs_checkpoint(tmp_path):
    """The replacement worker must outlive the server's shutdown until it has checkpointed: a
    SIGTERM past step 8 leaves the job queued at its stop step (the default --checkpoint-every
    of 20 has not been reached), not `running` at step 0."""
    from vqclip.jobs import RUN_DIR
    from vqclip.serve.store import JobStore

    data = tmp_path / "data"
    with ServerProcess(data) as server:
        (worker,) = server.workers()
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not (replaced := [w for w in server.workers() if w != worker and alive(w)]):
            assert time.monotonic() < deadline, f"no new worker:\n{server.output()}"
            time.sleep(0.1)
        job = server.submit({**JOB, "iterations": 40})
        server.wait(job, done=lambda job: job["status"] == "running" and job["step"] >= 8)
        server.stop()  # SIGTERM
        assert server.proc.returncode is not None  # ended by the signal, not killed at 60 s
        assert not alive(replaced[0])
    store = JobStore(data / "jobs.sqlite3")
    row = store.get(job)
    store.close()
    assert row.status == "queued" and 8 <= row.step < 40, row
    assert (data / "jobs" / job / RUN_DIR / "state.bin").is_file()


def test_an_idempotency_key_of_200_kb_gets_a_422_not_a_reset_connection(tmp_path):
    """A request head past uvicorn's default 16 KB was answered 400 while the client still
    sent it, which the client saw as a reset connection; the key's own check answers now."""
    import http.client
    import json

    with ServerProcess(tmp_path / "data", "--workers", "0") as server:
        conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
        headers = {"Content-Type": "application/json", "Idempotency-Key": "k" * 200_000}
        conn.request("POST", "/api/jobs", body=json.dumps(JOB), headers=headers)
        answer = conn.getresponse()
        assert answer.status == 422
        assert "Idempotency-Key" in json.loads(answer.read())["detail"]
        conn.close()
        assert server.http.get("/api/jobs").json()["jobs"] == []  # no job was made


def test_a_shutdown_ends_the_event_streams_at_once_without_a_traceback(tmp_path):
    """An open page's event stream does not hold a SIGTERM for the grace period (5 s) and
    then die as a cancelled task: it ends, and the server with it."""
    import http.client

    with ServerProcess(tmp_path / "data", "--workers", "0") as server:
        conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
        conn.request("GET", "/api/events")
        stream = conn.getresponse()
        assert stream.read1(1000).startswith(b"event: jobs")
        asked = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(30)
        assert time.monotonic() - asked < 4
        stream.read()  # the stream ended whole (a truncated one raises IncompleteRead)
        log = server.output()
    assert "Traceback" not in log and "Cancel" not in log
