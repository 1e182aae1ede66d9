"""What running jobs are doing now, for the Server-Sent Events streams.

Workers are processes of their own; their messages reach the server through pipes, read by the
server's threads, and the streams are coroutines on its event loop. A reader updates a job's
`Progress` (plain attribute writes) and calls `notify`, which wakes that job's streams on the
loop; `notify_all` is for changes that move the queue (a job starts, ends, is cancelled), on
which every stream reads the store again. A stream takes its wake-up event *before* reading the
state, so an update that lands in between is never missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field

RATE_WINDOW = 10  # steps: the rate of the last few, so the ETA follows a run that slows down


@dataclass
class Progress:
    """A running job as its streams see it."""

    iterations: int
    step: int = 0
    phase: str = "loading"  # loading (models, prompts) or running
    loss: float | None = None
    losses: dict[str, float] = field(default_factory=dict)
    lr: float | None = None
    preview_step: int = 0
    first_step: int = 0  # where this attempt began (a resumed job does not start at 0)
    started: float = field(default_factory=time.monotonic)
    # (step, when it ended) of the last steps; the first step of an attempt (warm-up) is the
    # earliest kept, never counted as a step of the rate
    recent: deque = field(default_factory=lambda: deque(maxlen=RATE_WINDOW + 1))

    def stepped(self, step: int, now: float | None = None) -> None:
        self.step = step
        self.recent.append((step, time.monotonic() if now is None else now))

    @property
    def it_s(self) -> float | None:
        if len(self.recent) < 3:
            return None
        (first, start), (last, end) = self.recent[0], self.recent[-1]
        return (last - first) / (end - start) if end > start else None

    def as_json(self) -> dict:
        rate = self.it_s
        eta = (self.iterations - self.step) / rate if rate else None
        return {
            "phase": self.phase,
            "step": self.step,
            "iterations": self.iterations,
            "loss": self.loss,
            "losses": self.losses,
            "lr": self.lr,
            "it_s": rate,
            "eta_s": eta,
            "preview_step": self.preview_step,
        }


class Hub:
    def __init__(self) -> None:
        self.progress: dict[str, Progress] = {}
        self.version = 0  # bumped by notify_all: the store changed in a way streams must see
        self.stopping = False  # the server is shutting down: every stream ends
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str | None, asyncio.Event] = {}

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def event(self, job_id: str | None) -> asyncio.Event:
        """The event the next change of `job_id` (None: of the store) sets; on the loop only."""
        if job_id not in self._events:
            self._events[job_id] = asyncio.Event()
        return self._events[job_id]

    def _wake(self, job_id: str | None) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    def _wake_all(self) -> None:
        self.version += 1
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    def stop(self) -> None:
        """On the loop, when the server begins to shut down: every stream ends now, rather than
        hold the shutdown until the server gives up waiting and cancels it."""
        self.stopping = True
        self._wake_all()

    def notify(self, job_id: str) -> None:
        """From any thread: `job_id`'s progress changed."""
        self._call(self._wake, job_id)

    def notify_counts(self) -> None:
        """From any thread: a job was added; only the counts of jobs changed."""
        self._call(self._wake, None)

    def notify_all(self) -> None:
        """From any thread: the store changed (a job queued, started, ended or went away)."""
        self._call(self._wake_all)

    def _call(self, fn, *args) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
                loop.call_soon_threadsafe(fn, *args)
