"""Where a batch's outputs live: a local folder, or shared storage named by an fsspec URL.

Jobs write into a local folder (`execute_job` and the image writers take paths). On a local
folder they write in place. For a URL (s3://, gs://, az://, ...) a unit works in a local mirror
of its folder: downloaded before it starts (so a unit retried on another worker resumes from
the last checkpoint that worker uploaded), uploaded file by file as checkpoints, frames and
results are written. The mirror's path is the same on every machine, so the settings a job
stores (an animation frame's init image path) mean the same wherever it resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vqclip.atomic import atomic_write_bytes
from vqclip.errors import ConfigError


def is_url(out: str) -> bool:
    return "://" in out and not out.startswith("file://")


class Storage:
    """A batch's output folder, given as a local path or an fsspec URL."""

    def __init__(self, out: str) -> None:
        self.out = str(out)
        self.fs = None
        if is_url(self.out):
            try:
                import fsspec
            except ImportError:
                raise ConfigError(
                    f"--out {self.out}: a URL needs fsspec and its filesystem package "
                    "(pip install fsspec s3fs, gcsfs, adlfs ...)"
                )
            try:
                self.fs, self.root = fsspec.core.url_to_fs(self.out)
            except (ImportError, ValueError) as e:
                raise ConfigError(f"--out {self.out}: cannot open this URL with fsspec ({e})")
            self.root = self.root.rstrip("/")
            if self.fs.protocol in ("memory", ("memory",)):
                raise ConfigError(
                    f"--out {self.out}: memory:// keeps nothing once this process ends, so a "
                    "batch's results and checkpoints would be lost; give a folder or shared "
                    "storage (s3://, gs://, ...)"
                )
        else:
            path = Path(self.out.removeprefix("file://"))
            _check_folder(path, self.out)
            # Absolute, so workers in other working folders (Ray actors) find the same place.
            self.root = self.out = str(path.resolve())

    @property
    def local(self) -> bool:
        return self.fs is None

    def path(self, rel: str) -> str:
        """Where `rel` lives, as the user would look for it (a path or a URL)."""
        if self.local:
            return str(Path(self.root) / rel)
        return f"{self.fs.unstrip_protocol(self.root)}/{rel}"

    def _remote(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's contents, or None when there is none."""
        if self.local:
            path = Path(self.root) / rel
            return path.read_bytes() if path.is_file() else None
        try:
            return self.fs.cat_file(self._remote(rel))
        except FileNotFoundError:
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Whole or not at all: an atomic rename locally, one object put on object stores."""
        if self.local:
            atomic_write_bytes(Path(self.root) / rel, data)
        else:
            self._make_parent(self._remote(rel))
            self.fs.pipe_file(self._remote(rel), data)

    def _make_parent(self, remote: str) -> None:
        """Filesystems with real folders (local://, sftp://) need the folder first; object
        stores have none and take this as a no-op."""
        self.fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)

    def read_text(self, rel: str) -> str | None:
        data = self.read_bytes(rel)
        return None if data is None else data.decode()

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def folders(self, rel: str) -> list[str]:
        """The names of the folders inside `rel` (none when it does not exist)."""
        if self.local:
            path = Path(self.root) / rel
            return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
        try:
            entries = self.fs.ls(self._remote(rel), detail=True)
        except FileNotFoundError:
            return []
        return sorted(
            e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"
        )

    @contextlib.contextmanager
    def workspace(self, rel: str) -> Iterator[Workspace]:
        """A local folder standing for `rel` while a unit works in it."""
        if self.local:
            yield Workspace(Path(self.root) / rel)
            return
        key = hashlib.sha256(self.out.encode()).hexdigest()[:16]
        mirror = Path(tempfile.gettempdir()) / "vqclip-batch" / key / rel
        shutil.rmtree(mirror, ignore_errors=True)  # a dead attempt's leftovers: the remote wins
        mirror.mkdir(parents=True)
        remote = self._remote(rel)
        if self.fs.exists(remote):
            self.fs.get(remote + "/", str(mirror) + "/", recursive=True)
        try:
            yield Workspace(mirror, self, rel)
        finally:
            shutil.rmtree(mirror, ignore_errors=True)


class Workspace:
    """A unit's local folder. `push(path)` sends a file or folder inside it to shared storage
    and `discard(path)` removes one from both; on a local output, where the folder is the
    output itself, there is nothing to send."""

    def __init__(self, folder: Path, storage: Storage | None = None, rel: str = "") -> None:
        self.folder = folder
        self._storage = storage
        self._rel = rel

    def _remote(self, path: Path) -> str:
        return self._storage._remote(f"{self._rel}/{path.relative_to(self.folder)}")

    def push(self, path: Path) -> None:
        if self._storage is None:
            return
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            self._storage._make_parent(self._remote(file))
            self._storage.fs.put_file(str(file), self._remote(file))

    def discard(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        if self._storage is not None and self._storage.fs.exists(self._remote(path)):
            self._storage.fs.rm(self._remote(path), recursive=True)


def _check_folder(path: Path, given: str) -> None:
    """A local --out must be a folder or not exist yet (it is made): a file there, or on the
    way there, is named rather than failing later as "File exists"."""
    for where in (path, *path.parents):
        if not where.exists():
            continue
        if not where.is_dir():
            what = "is a file" if where == path else f"goes through {str(where)!r}, a file"
            raise ConfigError(
                f"--out {given!r} {what}; give a folder for the batch's results (it is made "
                "if missing)"
            )
        return
