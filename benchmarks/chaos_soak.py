"""Chaos soak of the one job layer: kill `vqclip serve` or `vqclip batch` at random moments while
toy jobs flow in, restart what died, and check at the end that every accepted job finished with
the image of an unbroken run of its settings.

    python benchmarks/chaos_soak.py --door batch --minutes 10
    python benchmarks/chaos_soak.py --door serve --minutes 10 --json soak.json

Every `--every` seconds (jittered) one process of the door's tree (the server, one of its
worker processes, or the batch runner) gets SIGKILL, SIGTERM or SIGINT; a door that died is
started again with the same command. New toy jobs are submitted throughout (serve) or the specs
are fixed up front (batch). The figures: kills by signal, restarts, jobs accepted, done, lost,
and images equal to their unbroken run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = "from vqclip.cli import console; console()"
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


def toy_job(index: int, iterations: int) -> dict:
    shapes = ("circle", "square", "triangle", "star")
    colours = ("red", "green", "blue", "yellow")
    prompt = f"a {colours[index % 4]} {shapes[index // 4 % 4]} on a grey background"
    return {"prompt": prompt, "model": "toy", "iterations": iterations, "cutn": 4}


def children(pid: int) -> list[int]:
    """Every descendant of `pid` (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Door:
    """A door's process, started again whenever it has died."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv, self.log = argv, open(log, "a")  # noqa: SIM115 (closed in close)
        self.env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def ensure(self) -> bool:
        """Start it if it is not running; True when it had to be started."""
        if self.proc is not None and self.proc.poll() is None:
            return False
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLI, *self.argv],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        self.starts += 1
        return True

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def strike(door: Door, rng: random.Random, kills: dict[str, int]) -> None:
    """One random signal to one random process of the door's tree."""
    if door.proc is None or door.proc.poll() is not None:
        return
    targets = [door.proc.pid, *children(door.proc.pid)]
    name = rng.choice(sorted(SIGNALS))
    try:
        os.kill(rng.choice(targets), SIGNALS[name])
        kills[name] = kills.get(name, 0) + 1
    except ProcessLookupError:
        pass


def soak_batch(args, work: Path, rng: random.Random) -> dict:
    specs = work / "specs.jsonl"
    jobs = [toy_job(i, args.iterations) | {"seed": i} for i in range(args.jobs)]
    specs.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    out = work / "out"
    argv = ["batch", str(specs), "--out", str(out), "--checkpoint-every", "3", "--no-progress"]
    door, kills = Door(argv, work / "door.log"), {}
    deadline = time.monotonic() + args.minutes * 60
    door.ensure()
    while True:
        time.sleep(args.every * rng.uniform(0.5, 1.5))
        if door.proc.poll() in (0, 1):  # finished (1: some items failed, recorded)
            break
        if time.monotonic() < deadline:
            strike(door, rng, kills)
        door.ensure()
    door.close()
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    images = {r["id"]: out / r["outputs"][0] for r in records if r["status"] == "done"}
    return {"kills": kills, "starts": door.starts, "accepted": len(jobs), "images": images}


def soak_serve(args, work: Path, rng: random.Random) -> dict:
    import httpx

    port = free_port()
    data = work / "data"
    argv = ["serve", "--port", str(port), "--data", str(data), "--checkpoint-every", "3"]
    door, kills = Door(argv, work / "door.log"), {}
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    accepted: list[str] = []
    door.ensure()
    up_by = time.monotonic() + 300
    while time.monotonic() < up_by:  # the clock starts once the server answers
        try:
            if http.get("/api/info").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    deadline = time.monotonic() + args.minutes * 60
    next_job = 0
    while True:
        time.sleep(args.every * rng.uniform(0.5, 1.5))
        door.ensure()
        try:
            if time.monotonic() < deadline and next_job < args.jobs:
                answer = http.post("/api/jobs", json=toy_job(next_job, args.iterations))
                if answer.status_code == 201:
                    accepted.append(answer.json()["id"])
                    next_job += 1
            statuses = [http.get(f"/api/jobs/{job}").json()["status"] for job in accepted]
        except httpx.TransportError:
            continue  # between a kill and the restart
        if time.monotonic() >= deadline and all(s in ("done", "failed") for s in statuses):
            break
        if time.monotonic() < deadline:
            strike(door, rng, kills)
    door.close()
    images = {}
    for job in accepted:
        folder = data / "jobs" / job
        if json.loads((folder / "settings.json").read_text()) and (folder / "image.png").is_file():
            images[job] = folder / "image.png"
    return {"kills": kills, "starts": door.starts, "accepted": len(accepted), "images": images}


def unbroken_equal(images: dict[str, Path], work: Path) -> int:
    """How many images equal an unbroken run of the settings they carry."""
    import numpy as np
    from PIL import Image

    from vqclip.generate.config import GenerateConfig
    from vqclip.jobs import ModelCache, execute_job
    from vqclip.output import read_image_metadata

    models, equal = ModelCache(), 0
    for key, path in images.items():
        config = GenerateConfig.from_dict(read_image_metadata(path)["config"])
        again = execute_job(config, work / "unbroken" / key, models=models)
        same = np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(again.images[0])))
        equal += same
    return equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--door", choices=("batch", "serve"), default="batch")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="folder for the run (default: a temporary one)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="vqclip-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    started = time.monotonic()
    soak = soak_batch if args.door == "batch" else soak_serve
    result = soak(args, work, rng)
    images = result.pop("images")
    figures = {
        "door": args.door,
        **result,
        "done": len(images),
        "lost": result["accepted"] - len(images),
        "equal_to_unbroken": unbroken_equal(images, work),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
