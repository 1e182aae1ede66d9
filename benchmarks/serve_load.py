"""Load on `vqclip serve`: N concurrent clients submit toy jobs and follow them over
Server-Sent Events against one CPU worker for a bounded time; prints JSON.

Each client loops: submit a job, stream its events for a few seconds, read the job, list the
jobs, wait a little. Afterwards every accepted job is looked up: a job the server accepted and no
longer knows is lost. The clients run on the same machine as the server, so the latencies
include their share of its CPU.

    python benchmarks/serve_load.py [--clients 50] [--seconds 60] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

JOB = {"prompt": "a red circle on a blue background", "model": "toy", "size": [32, 32]}
JOB |= {"iterations": 4, "cutn": 4, "video": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    code = "from vqclip.cli import console; console()"
    command = [sys.executable, "-c", code, "serve", "--port", str(port), "--data", str(data)]
    log = open(data.parent / "serve.log", "w")  # noqa: SIM115 (the server's, until it ends)
    proc = subprocess.Popen(
        [*command, "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/info", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start; see {data.parent / 'serve.log'}")


class Tally:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.accepted: list[str] = []
        self.refused = 0  # 429: the queue was full (not an error: the server said when to retry)
        self.events = 0

    def time(self, kind: str, seconds: float) -> None:
        self.latency.setdefault(kind, []).append(seconds)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def request(client, tally: Tally, kind: str, method: str, url: str, **kw):
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kw)
    except httpx.HTTPError as e:
        tally.error(f"{kind}: {type(e).__name__}")
        return None
    tally.time(kind, time.perf_counter() - started)
    if response.status_code == 429:
        tally.refused += 1
        return response
    if response.status_code >= 400:
        tally.error(f"{kind}: HTTP {response.status_code}")
        return None
    return response


async def follow(client, tally: Tally, job_id: str, window: float) -> None:
    """Read a job's event stream for `window` seconds (or to its end); time the first event."""
    started = time.perf_counter()
    first = True
    try:
        async with asyncio.timeout(window):
            async with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
                if stream.status_code != 200:
                    tally.error(f"events: HTTP {stream.status_code}")
                    return
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        tally.events += 1
                        if first:
                            tally.time("events_first", time.perf_counter() - started)
                            first = False
                        if line == "event: end":
                            return
    except TimeoutError:
        return
    except httpx.HTTPError as e:
        tally.error(f"events: {type(e).__name__}")


async def client_loop(url: str, tally: Tally, until: float, seed: int, window: float) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while time.monotonic() < until:
            job = {**JOB, "seed": rng.randrange(2**31)}
            answer = await request(client, tally, "submit", "POST", "/api/jobs", json=job)
            if answer is not None and answer.status_code == 429:
                wait = float(answer.headers.get("retry-after", 1))
                await asyncio.sleep(min(wait, max(0.0, until - time.monotonic())))
                continue
            if answer is not None:
                job_id = answer.json()["id"]
                tally.accepted.append(job_id)
                await follow(client, tally, job_id, window)
                await request(client, tally, "get", "GET", f"/api/jobs/{job_id}")
            await request(client, tally, "list", "GET", "/api/jobs", params={"limit": 20})
            await asyncio.sleep(rng.uniform(0, 1))


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(ordered), "p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)}


async def main_async(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="vqclip-load-"))
    data = folder / "data"
    proc, url = start_server(data, args.workers)
    tally = Tally()
    try:
        started = time.monotonic()
        until = started + args.seconds
        loops = [
            client_loop(url, tally, until, seed, args.stream_seconds)
            for seed in range(args.clients)
        ]
        await asyncio.gather(*loops)
        elapsed = time.monotonic() - started
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            statuses: dict[str, int] = {}
            lost = 0
            for job_id in tally.accepted:
                answer = await client.get(f"/api/jobs/{job_id}")
                if answer.status_code != 200:
                    lost += 1
                    continue
                status = answer.json()["status"]
                statuses[status] = statuses.get(status, 0) + 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)
    requests = sum(len(v) for v in tally.latency.values())
    return {
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "refused_queue_full": tally.refused,
        "errors": tally.errors,
        "error_count": sum(tally.errors.values()),
        "accepted": len(tally.accepted),
        "lost": lost,
        "statuses_after": statuses,
        "events_received": tally.events,
        "latency_ms": {kind: percentiles(v) for kind, v in sorted(tally.latency.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--stream-seconds", type=float, default=3, help="how long each follows")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
