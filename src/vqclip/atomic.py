"""Atomic file writes: a file either appears complete under its final name or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync and rename it over `path`.

    On any exception the temporary file is removed and `path` is left untouched, so an
    interrupted write never leaves something that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); the result gets what a plain open() would.
        # Windows has no fchmod (nor POSIX modes to fix).
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


class LockHeld(Exception):
    """Another process holds the lock."""


def hold_lock(path: str | os.PathLike) -> IO | None:
    """An exclusive advisory lock on `path` (created if missing), held until the returned handle
    is closed (or the process ends, a kill -9 included); LockHeld when another process holds
    it. None where the system has no flock (Windows): nothing is locked there."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(path, "a")  # noqa: SIM115 (the caller holds it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise LockHeld(str(path))
    return handle
