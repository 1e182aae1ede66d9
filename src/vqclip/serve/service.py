"""The job service: the store, the worker processes that carry jobs out (one per GPU, else one),
the folders they write, and what they report, passed on to the event streams.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from vqclip.errors import VQClipError
from vqclip.jobs import JobOptions
from vqclip.jobs.workers import worker_devices
from vqclip.omp import set_wait_policy
from vqclip.serve.live import Hub
from vqclip.serve.store import JobRow, JobStore
from vqclip.serve.worker import worker_process

log = logging.getLogger("vqclip.serve")


@dataclass
class ServeSettings:
    data: Path
    workers: int | None = None  # None: one per GPU, else one
    token: str | None = None
    allow_model_paths: bool = False
    checkpoint_every: int = JobOptions().checkpoint_every
    preview_every: int = 5
    max_upload_bytes: int = 16 * 2**20
    max_upload_pixels: int = 4096 * 4096
    max_body_bytes: int = 256 * 2**10
    # Jobs waiting at most; past it a submit gets 429 and Retry-After. None: no limit.
    max_queued: int | None = 200
    trusted_hosts: tuple[str, ...] | None = None  # Host headers accepted; None: any
    # Registry downloads on a request: None allows them only on a server no one else can reach
    # (loopback Host headers only, no token).
    allow_downloads: bool | None = None
    running: int = 1  # worker processes started (they share the CPU threads); set by Service

    # The data folder's layout, for the service and its workers alike.
    @property
    def jobs_dir(self) -> Path:
        """One folder per job, named by its id."""
        return Path(self.data) / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return Path(self.data) / "uploads"

    @property
    def database(self) -> Path:
        """The job store (`JobStore`)."""
        return Path(self.data) / "jobs.sqlite3"


MIN_TOKEN_CHARS = 16


def check_token(token: str | None) -> None:
    """A token others cannot guess in a few tries: at least MIN_TOKEN_CHARS, not blank."""
    if token is None:
        return
    if not token.strip() or len(token) < MIN_TOKEN_CHARS or token != token.strip():
        raise VQClipError(
            f"the token must be at least {MIN_TOKEN_CHARS} characters, without leading or "
            "trailing spaces; e.g. python -c 'import secrets; print(secrets.token_urlsafe())'"
        )


def downloads_allowed(settings: ServeSettings) -> bool:
    if settings.allow_downloads is not None:
        return settings.allow_downloads
    return settings.token is None and settings.trusted_hosts is not None


def _lock_data(data: Path):
    """Hold DATA/serve.lock for as long as this server runs: a second server on the same data
    would put the first one's running jobs back in the queue and run them twice."""
    from vqclip.atomic import LockHeld, hold_lock

    try:
        return hold_lock(data / "serve.lock")
    except LockHeld:
        raise VQClipError(
            f"another vqclip serve is using {data}; stop it, or give this one its own --data"
        )


@dataclass
class _Worker:
    name: str
    device: str
    runner: multiprocessing.Process
    messages: multiprocessing.connection.Connection  # the server's end of its message pipe
    control: multiprocessing.connection.Connection  # the server's end of its control pipe


class Service:
    """The store, the workers and the messages between them and the event streams.

    Workers are processes (`worker.worker_process`). One that dies (killed, out of memory) is
    replaced, and its job goes back to the queue the way a crashed server's does."""

    def __init__(self, settings: ServeSettings) -> None:
        check_token(settings.token)
        self.data = Path(settings.data).resolve()
        self.settings = settings = dataclasses.replace(settings, data=self.data)
        self.jobs_dir, self.uploads_dir = settings.jobs_dir, settings.uploads_dir
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_data(self.data)
        self.store = JobStore(settings.database)
        self.hub = Hub()
        self.devices = worker_devices(settings.workers) if settings.workers != 0 else []
        self.settings = settings = dataclasses.replace(settings, running=max(1, len(self.devices)))
        self._mp = multiprocessing.get_context("spawn")
        self._stop = threading.Event()
        self._closed = threading.Event()  # the workers have ended: the listener ends too
        self._replacing = threading.Lock()
        self._workers: list[_Worker] = []
        self._listener: threading.Thread | None = None
        self._held = FolderHolds(self._remove_folder)

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def start(self) -> None:
        """Put back the jobs a crashed server left running, then start the workers. Call it
        from the main thread: a worker process dies with the thread that started it."""
        requeued = self.store.recover()
        if requeued:
            log.warning("resuming %d job(s) the last server left running", len(requeued))
        # the workers' OpenMP wait policy (vqclip.omp), inherited from this process's
        # environment: their threads sleep where several share the cores
        set_wait_policy(workers=len(self.devices))
        self._workers = [self._start_worker(f"worker-{i}", d) for i, d in enumerate(self.devices)]
        if self._workers:
            self._listener = threading.Thread(
                target=self._listen, name="vqclip-workers", daemon=True
            )
            self._listener.start()

    def _start_worker(self, name: str, device: str) -> _Worker:
        messages, worker_messages = self._mp.Pipe(duplex=False)
        worker_control, control = self._mp.Pipe(duplex=False)
        args = (name, device, self.settings, worker_messages, worker_control, os.getpid())
        process = self._mp.Process(target=worker_process, args=args, name=name, daemon=True)
        process.start()
        worker_messages.close()  # the worker's ends are the worker's
        worker_control.close()
        return _Worker(name, device, process, messages, control)

    def _listen(self) -> None:
        """Messages from the worker processes to the streams; a dead worker is replaced.

        This thread starts the replacements, and a worker process dies with the thread that
        started it (PDEATHSIG): so it runs until `stop()` has seen every worker end, not just
        until stop is asked, or a replaced worker would be killed before it checkpoints."""
        while not self._closed.is_set():
            pipes = {w.messages: w for w in self._workers if not w.messages.closed}
            if not pipes:
                self._closed.wait(0.2)
            for conn in multiprocessing.connection.wait(list(pipes), timeout=0.5):
                try:
                    self._handle(conn.recv())
                except (EOFError, OSError, pickle.UnpicklingError):
                    conn.close()  # the worker is gone (or died mid-message)
            self._replace_dead_workers()

    def _handle(self, message: tuple) -> None:
        kind, job_id = message[0], message[1]
        if kind == "progress":
            self.hub.progress[job_id] = message[2]
            self.hub.notify(job_id)
        else:
            if kind == "ended":
                self.hub.progress.pop(job_id, None)
            self.hub.notify_all()

    def _replace_dead_workers(self) -> None:
        with self._replacing:  # stop() sees either the old worker or its replacement
            if self._stop.is_set():
                return
            for i, worker in enumerate(self._workers):
                if worker.runner.is_alive():
                    continue
                log.error(
                    "%s stopped (exit code %s); starting it again",
                    worker.name,
                    worker.runner.exitcode,
                )
                worker.messages.close()
                worker.control.close()
                for job_id in self.store.recover(worker=worker.name):
                    self.hub.progress.pop(job_id, None)
                self.hub.notify_all()
                self._workers[i] = self._start_worker(worker.name, worker.device)

    def stop(self, timeout: float = 120.0) -> None:
        """Running jobs checkpoint after their step under way and go back to the queue."""
        with self._replacing:
            self._stop.set()
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.control.send("stop")
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.runner.join(max(0.0, deadline - time.monotonic()))
            if worker.runner.is_alive():
                worker.runner.kill()  # its job stays `running`: the next start puts it back
        self._closed.set()  # every worker has ended: the listener (their parent) may go
        if self._listener is not None:
            self._listener.join(5)
        for worker in self._workers:
            self._drain(worker)
        self.store.close()
        if self._lock is not None:
            self._lock.close()

    def _drain(self, worker: _Worker) -> None:
        """The last messages of a stopped worker (its job's end), then its pipes closed."""
        with contextlib.suppress(EOFError, OSError, pickle.UnpicklingError):
            while worker.messages.poll(0):
                self._handle(worker.messages.recv())
        worker.messages.close()
        worker.control.close()

    def cancel(self, job_id: str) -> JobRow | None:
        """A queued job ends at once; a running one when its worker sees the flag."""
        row = self.store.cancel(job_id)
        self.hub.notify_all()
        return row

    def delete_files(self, job_id: str) -> None:
        """Remove a deleted job's folder: now, or when the last response reading it ends."""
        self._held.remove(job_id)

    def hold_files(self, job_ids: Iterable[str]) -> Callable[[], None]:
        """Keep the folders of `job_ids` while a response reads them (a zip being sent): a
        delete meanwhile takes the job away at once and its files when the response ends.
        Take the hold before looking at the jobs. Returns the release (safe to call twice)."""
        return self._held.hold(job_ids)

    def _remove_folder(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)


class FolderHolds:
    """Counts of the responses reading each job folder, and the folders deleted meanwhile,
    removed (by `remove_folder`) when the last of those responses ends."""

    def __init__(self, remove_folder: Callable[[str], None]) -> None:
        self._remove_folder = remove_folder
        self._readers: Counter[str] = Counter()
        self._deleted: set[str] = set()
        self._lock = threading.Lock()

    def hold(self, job_ids: Iterable[str]) -> Callable[[], None]:
        held = list(dict.fromkeys(job_ids))
        with self._lock:
            self._readers.update(held)
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._readers.subtract(held)
                free = [job_id for job_id in held if self._readers[job_id] <= 0]
                for job_id in free:
                    del self._readers[job_id]
                due = [job_id for job_id in free if job_id in self._deleted]
                self._deleted.difference_update(due)
            for job_id in due:
                self._remove_folder(job_id)

        return release

    def remove(self, job_id: str) -> None:
        with self._lock:
            if self._readers[job_id] > 0:
                self._deleted.add(job_id)
                return
        self._remove_folder(job_id)
