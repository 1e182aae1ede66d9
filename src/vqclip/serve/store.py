"""The job store: every accepted job and its state in SQLite (WAL), so none is lost to a crash.

A job row is written, and committed with a full sync, before the API answers that the job was
accepted. Workers claim the oldest queued job in one transaction, so two workers never take the
same job. A server that was killed leaves its running jobs marked `running`; `recover()` at the
next start puts them back at the head of the queue (their run checkpoint lets them resume), and
gives up on a job that has been interrupted `MAX_ATTEMPTS` times (it would crash every start).
Progress within a run is not written here: the job's run checkpoint is the durable record.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqclip.jobs.status import FINISHED as JOB_FINISHED
from vqclip.jobs.workers import MAX_ATTEMPTS

STATUSES = ("queued", "running", *JOB_FINISHED)
FINISHED = JOB_FINISHED

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    model TEXT,
    video INTEGER NOT NULL DEFAULT 0,
    parent TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    step INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    job TEXT NOT NULL,
    created REAL NOT NULL
);
"""
# How long an Idempotency-Key is remembered: retries come within minutes; a day is generous.
KEY_TTL_S = 24 * 3600


class QueueFull(Exception):
    """The queue holds `limit` jobs already; `retry_after`: seconds until one has likely run."""

    def __init__(self, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(f"{queued} jobs queued (limit {limit})")
        self.queued, self.limit, self.retry_after = queued, limit, retry_after


class KeyReused(Exception):
    """An Idempotency-Key already stands for a different request."""


@dataclass(frozen=True)
class JobRow:
    seq: int
    id: str
    status: str
    config: dict[str, Any]
    model: str | None
    video: bool
    parent: str | None
    created: float
    started: float | None
    finished: float | None
    step: int
    error: str | None
    worker: str | None
    attempts: int
    cancel: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRow:
        data = dict(row)
        data["config"] = json.loads(data["config"])
        data["video"], data["cancel"] = bool(data["video"]), bool(data["cancel"])
        return cls(**data)


def new_job_id() -> str:
    """16 hex digits: unguessable, and safe as a folder name by construction."""
    return secrets.token_hex(8)


def is_job_id(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


class JobStore:
    """Jobs in `DATA/jobs.sqlite3`. Each thread gets its own connection (SQLite's rule); WAL lets
    readers go on while a worker writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # Each connection is used by its own thread only; check_same_thread is off so that
            # close() can close them all at shutdown.
            db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before the API says "accepted" (power loss included).
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # Writers of this process queue on a lock, which wakes the next at once; SQLite's own
        # busy wait (left for the other process) sleeps in steps of up to 100 ms.
        db = self._db()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    def admit(
        self,
        config: dict[str, Any],
        *,
        model: str | None = None,
        video: bool = False,
        parent: str | None = None,
        job_id: str | None = None,
        key: tuple[str, str] | None = None,
        max_queued: int | None = None,
        workers: int = 1,
    ) -> tuple[JobRow, bool]:
        """Queue a job, in one transaction with its checks: `key` (an Idempotency-Key and a
        fingerprint of the request) already used for the same request gives back that job, and
        True (a replay); for another request, KeyReused. More than `max_queued` jobs waiting:
        QueueFull (with a Retry-After from recent jobs' durations over `workers`)."""
        job_id = job_id or new_job_id()
        with self._transaction() as db:
            now = time.time()
            if key is not None:
                db.execute("DELETE FROM idempotency WHERE created < ?", (now - KEY_TTL_S,))
                seen = db.execute(
                    "SELECT request, job FROM idempotency WHERE key = ?", (key[0],)
                ).fetchone()
                if seen is not None and seen["request"] != key[1]:
                    raise KeyReused(key[0])
                if seen is not None:
                    first = db.execute("SELECT * FROM jobs WHERE id = ?", (seen["job"],)).fetchone()
                    return JobRow.from_row(first), True
            if max_queued is not None:
                queued = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")
                waiting = queued.fetchone()[0]
                if waiting >= max_queued:
                    raise QueueFull(waiting, max_queued, self._retry_after(db, workers))
            db.execute(
                "INSERT INTO jobs (id, status, config, model, video, parent, created) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, json.dumps(config), model, int(video), parent, now),
            )
            if key is not None:
                db.execute(
                    "INSERT INTO idempotency (key, request, job, created) VALUES (?, ?, ?, ?)",
                    (key[0], key[1], job_id, now),
                )
        return self.get(job_id), False  # type: ignore[return-value]

    @staticmethod
    def _retry_after(db: sqlite3.Connection, workers: int) -> int:
        """Seconds until a queued job has likely started: the median run of the last jobs
        over the workers; 30 without a history. Between 1 s and 10 minutes."""
        runs = db.execute(
            "SELECT finished - started FROM jobs WHERE status IN ('done', 'partial') "
            "AND started IS NOT NULL ORDER BY seq DESC LIMIT 20"
        ).fetchall()
        if not runs:
            return 30
        median = sorted(r[0] for r in runs)[len(runs) // 2]
        return int(min(600, max(1, median / max(1, workers) + 0.999)))

    def get(self, job_id: str) -> JobRow | None:
        row = self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else JobRow.from_row(row)

    def list(
        self, *, status: str | None = None, limit: int = 50, before: int | None = None
    ) -> list[JobRow]:
        """Newest first; `before`: only jobs older than the one with this `seq` (paging)."""
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._db().execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [JobRow.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {status: 0 for status in STATUSES} | {s: n for s, n in rows}

    def position(self, job: JobRow) -> int | None:
        """How many queued jobs go before this queued one (0: it is next)."""
        if job.status != "queued":
            return None
        sql = "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < ?"
        return self._db().execute(sql, (job.seq,)).fetchone()[0]

    def claim(self, worker: str) -> JobRow | None:
        """The oldest queued job, now running on `worker`; None when the queue is empty."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', worker = ?, started = ?, "
                "attempts = attempts + 1 WHERE id = ?",
                (worker, time.time(), row["id"]),
            )
        return self.get(row["id"])

    def finish(self, job_id: str, status: str, step: int, error: str | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET status = ?, step = ?, error = ?, finished = ? WHERE id = ?",
                (status, step, error, time.time(), job_id),
            )

    def set_step(self, job_id: str, step: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET step = ? WHERE id = ?", (step, job_id))

    def requeue(self, job_id: str, step: int) -> None:
        """A running job stopped for a shutdown: first in line again at the next start."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET status = 'queued', step = ?, worker = NULL, attempts = "
                "MAX(attempts - 1, 0) WHERE id = ?",
                (step, job_id),
            )

    def cancel(self, job_id: str) -> JobRow | None:
        """A queued job is cancelled at once; a running one is flagged (its worker stops it
        after the step under way). Finished jobs are left as they are."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET status = 'cancelled', finished = ?, cancel = 1 "
                "WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            )
            db.execute("UPDATE jobs SET cancel = 1 WHERE id = ? AND status = 'running'", (job_id,))
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Remove a job that is not running; False if it is running (or unknown)."""
        with self._transaction() as db:
            gone = db.execute("DELETE FROM jobs WHERE id = ? AND status != 'running'", (job_id,))
            if gone.rowcount != 1:
                return False
            # the job's key is forgotten with it: a retry after a delete is a new request
            db.execute("DELETE FROM idempotency WHERE job = ?", (job_id,))
            return True

    def recover(self, worker: str | None = None) -> list[str]:
        """After a crash (of the server, or of `worker` alone): jobs left `running` go back to
        the queue in their old order, except those cancelled meanwhile or interrupted too often.
        Returns the requeued ids."""
        only, args = ("", ()) if worker is None else (" AND worker = ?", (worker,))
        running = "status = 'running'" + only
        with self._transaction() as db:
            now = time.time()
            db.execute(
                f"UPDATE jobs SET status = 'cancelled', finished = ? "
                f"WHERE {running} AND cancel = 1",
                (now, *args),
            )
            db.execute(
                f"UPDATE jobs SET status = 'failed', finished = ?, error = ? "
                f"WHERE {running} AND attempts >= ?",
                (
                    now,
                    f"stopped by a crash during this job {MAX_ATTEMPTS} times; not retried",
                    *args,
                    MAX_ATTEMPTS,
                ),
            )
            rows = db.execute(f"SELECT id FROM jobs WHERE {running}", args).fetchall()
            db.execute(f"UPDATE jobs SET status = 'queued', worker = NULL WHERE {running}", args)
        return [r["id"] for r in rows]
