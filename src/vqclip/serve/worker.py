"""A worker: claims the oldest queued job, carries it out with `vqclip.jobs.execute_job` into
`DATA/jobs/<id>/`, records how it ended, and takes the next.

The server runs each worker in its own process, so the loop's Python work never waits on the web
server's (one interpreter lock each) and a crash in a job cannot take the server down. Between
the two there are only two pipes, each with one writer, so a worker killed in mid-message can
leave no lock held: the worker reports what it does on one (messages below), the server asks it
to stop on the other. A cancel reaches the worker through the store (the job's `cancel` flag).
A cancel or a stop ends the run after the step under way, with its checkpoint written; an idle
worker looks for new jobs twice a second.

Messages: ("claimed", id), ("progress", id, Progress.as_json()), ("ended", id).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import time
from pathlib import Path

from vqclip.errors import VQClipError
from vqclip.jobs.files import PREVIEW_FILE, THUMB_FILE
from vqclip.serve.live import Progress
from vqclip.serve.store import JobRow, JobStore

log = logging.getLogger("vqclip.serve")

THUMB_SIZE = 256
CANCEL_CHECK_S = 0.25
IDLE_POLL_S = 0.5


class PipeControl:
    """A worker process's end of the server's pipe: "stop" ends the worker, and so does the
    pipe's end (the server is gone)."""

    def __init__(self, conn) -> None:
        self.conn, self.stop_asked = conn, False

    def _read(self, timeout: float) -> None:
        try:
            while not self.stop_asked and self.conn.poll(timeout):
                self.stop_asked = self.conn.recv() == "stop"
                timeout = 0
        except (EOFError, OSError):
            self.stop_asked = True

    def stopping(self) -> bool:
        self._read(0)
        return self.stop_asked

    def wait(self, timeout: float) -> None:
        self._read(timeout)


def write_quietly(path: Path, data: bytes) -> None:
    """Replace `path` whole, without the fsync of a durable write: previews are disposable."""
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def preview_png(images) -> bytes:
    """The batch's first images side by side, (B, 3, H, W) in [0, 1] -> PNG bytes."""
    import torch

    from vqclip.output import encode_image

    strip = torch.cat(list(images[:4]), dim=-1)  # (3, H, W * min(B, 4))
    return encode_image(strip, "PNG")


def make_thumbnail(source: Path, target: Path) -> None:
    from PIL import Image

    with Image.open(source) as img:
        img = img.convert("RGB")
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=88)
    write_quietly(target, buffer.getvalue())


class WorkerLoop:
    """One worker's loop, in a process of its own. `send` takes the messages, `control` says
    when to stop; `parent` is the server's pid, so that a worker whose server died stops too."""

    def __init__(
        self, name: str, device: str, settings, send, control, models, parent: int
    ) -> None:
        self.name, self.device, self.settings = name, device, settings
        self.send, self.control, self.models, self.parent = send, control, models, parent
        self.store = JobStore(settings.database)

    def stopping(self) -> bool:
        return os.getppid() != self.parent or self.control.stopping()

    def run(self) -> None:
        from vqclip.jobs.loop import work

        def carry_out(job: JobRow) -> bool:
            self.send(("claimed", job.id))
            try:
                self.run_job(job)
            finally:
                self.send(("ended", job.id))
            return True  # a stopped job went back to the queue; `stopping` ends the loop

        try:
            work(
                lambda: self.store.claim(self.name),
                carry_out,
                stopping=self.stopping,
                idle=self.control.wait,
                poll_s=IDLE_POLL_S,
            )
        finally:
            self.store.close()

    def run_job(self, job: JobRow) -> None:
        from vqclip.generate.config import GenerateConfig
        from vqclip.jobs import JobFiles, JobOptions, execute_job, image_names
        from vqclip.jobs.status import STOPPED

        folder = self.settings.jobs_dir / job.id
        folder.mkdir(parents=True, exist_ok=True)
        if JobFiles.folder(folder).has_checkpoint():
            log.info("job %s resumes from its checkpoint (step %d)", job.id, job.step)
        progress = Progress(iterations=int(job.config.get("iterations", 0)), step=job.step)
        self.send(("progress", job.id, progress.as_json()))
        preview_every = max(1, self.settings.preview_every)
        last = {"report": 0.0, "cancel_check": 0.0, "cancelled": False}

        def on_step(step, run) -> None:
            now = time.monotonic()
            if progress.phase == "loading":
                progress.phase, progress.first_step = "running", step.index
            progress.stepped(step.index, now)
            at_end = step.index == run.config.iterations
            show = step.index % preview_every == 0 or at_end or step.index == progress.first_step
            if show or now - last["report"] >= 0.2:  # reading losses syncs a GPU: not each step
                last["report"] = now
                progress.loss = float(step.total.float().mean())
                progress.losses = {k: float(v.float().mean()) for k, v in step.losses.items()}
                progress.lr = step.lr
            if show:
                write_quietly(folder / PREVIEW_FILE, preview_png(step.image))
                progress.preview_step = step.index
            self.send(("progress", job.id, progress.as_json()))

        def on_checkpoint(run_dir: Path) -> None:
            self.store.set_step(job.id, progress.step)

        def should_stop() -> bool:
            if self.stopping():
                return True
            now = time.monotonic()
            if now - last["cancel_check"] >= CANCEL_CHECK_S:
                last["cancel_check"] = now
                row = self.store.get(job.id)
                last["cancelled"] = row is None or row.cancel
            return last["cancelled"]

        error, status, step = None, "failed", job.step
        try:
            config = GenerateConfig.from_dict(job.config)
            progress.iterations = config.iterations
            result = execute_job(
                config,
                folder,
                options=JobOptions(
                    checkpoint_every=self.settings.checkpoint_every, video=job.video
                ),
                models=self.models,
                device=self.device,
                workers=self.settings.running,
                on_step=on_step,
                should_stop=should_stop,
                on_checkpoint=on_checkpoint,
            )
            status, step, error = result.status, result.steps, result.error
        except VQClipError as e:
            error = str(e)
        except Exception as e:  # a bug or the machine (out of memory): this job fails, not all
            log.exception("job %s failed", job.id)
            error = f"{type(e).__name__}: {e}"
            _free_device_memory(self.device)
        if status == STOPPED:
            row = self.store.get(job.id)
            if row is not None and row.cancel:
                self._thumbnail(folder, folder / PREVIEW_FILE)
                self.store.finish(job.id, "cancelled", step)
            elif row is not None:
                self.store.requeue(job.id, step)
            return
        first = folder / image_names(int(job.config.get("batch_size", 1) or 1))[0]
        self._thumbnail(folder, first if first.is_file() else folder / PREVIEW_FILE)
        self.store.finish(job.id, status, step, error)

    def _thumbnail(self, folder: Path, source: Path) -> None:
        if source.is_file():
            try:
                make_thumbnail(source, folder / THUMB_FILE)
            except OSError as e:
                log.warning("no thumbnail for %s: %s", folder.name, e)


def _free_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the server's does (a kill -9 included)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def worker_process(name, device, settings, messages, control, parent) -> None:
    """The entry point of a worker process: `messages` and `control` are its ends of the two
    pipes to the server."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s: {name}: %(message)s")
    from vqclip.jobs import ModelCache

    pipe = PipeControl(control)

    def send(message) -> None:
        try:
            messages.send(message)
        except OSError:  # the server is gone: stop after this step
            pipe.stop_asked = True

    WorkerLoop(name, device, settings, send, pipe, ModelCache(), parent).run()
