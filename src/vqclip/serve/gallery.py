"""The gallery's routes under /api/gallery: search jobs by prompt, fetch a set of jobs by id,
download the finished images of a selection as one zip (streamed, and whole even when its jobs
are deleted while it is sent), cancel every queued job, delete every failed one.

A zip's ids come in the query string (GET, up to 200: URLs have limits) or in a JSON body (POST,
up to 10000, which the page uses: a selection can be every job it has shown). The POST goes
through the same guard as every change (same origin, the token), and its body must be JSON.

They use the job store's public calls only. A search pages through the jobs newest first and
matches in Python (every word of the query, case-folded, in the job's prompts), so it reads any
text the way the page shows it; a server's jobs number in the thousands at most.
"""

from __future__ import annotations

import asyncio
import re
import time
import zipfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from vqclip.jobs import image_names
from vqclip.serve.admission import parse_json_body
from vqclip.serve.problems import APIError
from vqclip.serve.problems import responses as _errors
from vqclip.serve.service import Service
from vqclip.serve.store import STATUSES, JobRow, is_job_id
from vqclip.serve.views import JobViews

MAX_IDS = 200  # ids in a query string: 200 are 3.4 KB of the URL
MAX_ZIP_IDS = 10_000  # ids in a POSTed zip request: some 190 KB of JSON, under the body cap
_PAGE = 500  # rows read at a time while searching
_CHUNK = 2**20
MADE = ("done", "partial")  # jobs whose images are finished


class GalleryPage(BaseModel):
    jobs: list[dict[str, Any]] = Field(description="jobs as GET /api/jobs/{id} shows them")
    counts: dict[str, int] = Field(description="how many jobs there are of each status")
    next: int | None = Field(description="give as `before` for the next page; null: no more")


class Cancelled(BaseModel):
    cancelled: int = Field(description="queued jobs cancelled")


class Deleted(BaseModel):
    deleted: int = Field(description="failed jobs deleted with their files")


def prompt_matches(row: JobRow, words: list[str]) -> bool:
    text = " ".join(map(str, row.config.get("prompts") or ())).casefold()
    return all(word in text for word in words)


def _job_ids(parts: list[str], most: int, how: str) -> list[str]:
    """`parts` in order without repeats; APIError 422 for one that is not a job id, or for
    none or more than `most` of them (`how`: how they are given, for the message)."""
    found = list(dict.fromkeys(parts))
    bad = [part for part in found if not is_job_id(part)]
    if bad:
        raise APIError(422, f"ids: {bad[0][:40]!r} is not a job id (16 hex digits)")
    if not found or len(found) > most:
        raise APIError(422, f"ids: give 1 to {most} job ids, {how}")
    return found


def parse_ids(ids: str, hint: str = "") -> list[str]:
    """Job ids from "a,b,c", in order, without repeats; APIError 422 for one that is not.
    `hint` ends the message for too many."""
    parts = [part.strip() for part in ids.split(",") if part.strip()]
    return _job_ids(parts, MAX_IDS, "separated by commas" + hint)


ZIP_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ids"],
    "additionalProperties": False,
    "properties": {
        "ids": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "minItems": 1,
            "maxItems": MAX_ZIP_IDS,
            "description": "job ids; jobs without a finished image, and unknown ids, are left out",
        }
    },
}


def zip_request_ids(body: Any) -> list[str]:
    """The job ids of a zip request's JSON body `{"ids": [...]}`, in order, without repeats;
    APIError 422 naming what is wrong."""
    if not isinstance(body, dict):
        raise APIError(422, 'give a JSON object: {"ids": ["<job id>", ...]}')
    unknown = sorted(set(body) - {"ids"})
    if unknown:
        raise APIError(422, f"unknown field(s) {', '.join(map(repr, unknown))}: give ids only")
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(part, str) for part in ids):
        raise APIError(422, f"ids={str(ids)[:60]}: give a list of job ids (strings)")
    return _job_ids(ids, MAX_ZIP_IDS, "in a list")


def _slug(text: str) -> str:
    """A file-name-safe start of a prompt ("A red circle:2" -> "a-red-circle-2")."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].rstrip("-")


def zip_members(service: Service, ids: list[str]) -> list[tuple[Path, str]]:
    """(file, name in the zip) of every finished image of the jobs `ids` (unknown ids and
    jobs without a finished image are skipped)."""
    members = []
    for job_id in ids:
        row = service.store.get(job_id)
        if row is None or row.status not in MADE:
            continue
        folder = service.job_dir(job_id)
        prompts = row.config.get("prompts") or [""]
        stem = "-".join(filter(None, [_slug(str(prompts[0])), job_id]))
        names = image_names(int(row.config.get("batch_size", 1) or 1))
        for i, name in enumerate(names):
            if (folder / name).is_file():
                suffix = f"_{i}" if len(names) > 1 else ""
                members.append((folder / name, f"{stem}{suffix}.png"))
    return members


class _Pipe:
    """A write-only, unseekable file for zipfile: what was written since the last `take()`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def stream_zip(members: list[tuple[Path, str]]) -> Generator[bytes, None, None]:
    """A zip of `members`, a piece at a time: no file is held whole in memory, and the first
    bytes go out before the last file is read. Stored, not deflated: PNGs are compressed.
    The files must stay until it ends (`Service.hold_files`)."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[arg-type]
        for path, name in members:
            info = zipfile.ZipInfo(name, time.localtime(path.stat().st_mtime)[:6])
            info.file_size = path.stat().st_size  # zipfile picks zip64 from it
            with path.open("rb") as source, archive.open(info, "w") as target:
                while chunk := source.read(_CHUNK):
                    target.write(chunk)
                    yield pipe.take()
            yield pipe.take()
    yield pipe.take()  # the central directory


class ZipResponse(StreamingResponse):
    """A zip sent as it is written (`stream_zip`), whose job folders are held from before its
    members are listed until it is sent, cut off by the client or by a shutdown: a job deleted
    meanwhile is gone from the API at once and its files when the zip is done with them, so a
    zip that arrives is whole. `release` lets the folders go."""

    def __init__(
        self,
        pieces: Generator[bytes, None, None],
        release: Callable[[], None],
        headers: dict[str, str],
    ) -> None:
        super().__init__(pieces, media_type="application/zip", headers=headers)
        self._pieces, self._release = pieces, release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A cancelled send waits for the piece being read, so the generator is idle here:
            # close its open file before the folders may go.
            self._pieces.close()
            self._release()


def build_gallery_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/api/gallery")
    views = JobViews(service)
    store = service.store

    def page(rows: list[JobRow], next_seq: int | None) -> GalleryPage:
        jobs = [views.show(r, store.position(r)) for r in rows]
        return GalleryPage(jobs=jobs, counts=store.counts(), next=next_seq)

    @router.get(
        "",
        summary="Jobs, newest first, whose prompts hold every word of `q`; or the jobs `ids`",
        response_model=GalleryPage,
        responses=_errors(422),
    )
    def gallery(
        q: str = Query("", max_length=500, description="words that must all be in the prompts"),
        status: str | None = Query(None, description=f"one of {', '.join(STATUSES)}"),
        ids: str | None = Query(
            None, max_length=MAX_IDS * 17, description="only these jobs (comma-separated ids)"
        ),
        limit: int = Query(50, ge=1, le=500),
        before: int | None = Query(None, ge=0, le=2**62, description="the `next` of a page"),
    ) -> GalleryPage:
        if status is not None and status not in STATUSES:
            raise APIError(422, f"status={status!r}: choose from {', '.join(STATUSES)}")
        if ids is not None:
            rows = [row for job_id in parse_ids(ids) if (row := store.get(job_id)) is not None]
            return page(rows, None)
        words = q.casefold().split()
        found: list[JobRow] = []  # one more than a page, to know whether there is a next
        cursor = before
        while len(found) <= limit:
            batch = store.list(status=status, limit=_PAGE, before=cursor)
            found += [row for row in batch if prompt_matches(row, words)]
            if len(batch) < _PAGE:
                break
            cursor = batch[-1].seq
        more = len(found) > limit
        return page(found[:limit], found[limit - 1].seq if more else None)

    def zip_of(job_ids: list[str]) -> StreamingResponse:
        release = service.hold_files(job_ids)
        try:
            members = zip_members(service, job_ids)
            if not members:
                raise APIError(404, "none of these jobs has a finished image")
        except BaseException:
            release()
            raise
        name = f"vqclip-{len(members)}-images.zip"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return ZipResponse(stream_zip(members), release, headers)

    zip_answers = {**_errors(404, 422), 200: {"content": {"application/zip": {}}}}

    @router.get(
        "/zip",
        summary=f"The finished images of the jobs `ids` (up to {MAX_IDS}) as one zip, streamed "
        "(jobs without a finished image, and unknown ids, are left out)",
        response_class=StreamingResponse,
        responses=zip_answers,
    )
    def download_zip(
        # Longer than MAX_IDS ids take, so that too many get the message that points to POST.
        ids: str = Query(..., max_length=2**16, description="job ids, comma-separated"),
    ) -> StreamingResponse:
        return zip_of(parse_ids(ids, '; for more, POST {"ids": [...]} to /api/gallery/zip'))

    @router.post(
        "/zip",
        summary=f"The finished images of the jobs in the body's `ids` (up to {MAX_ZIP_IDS}) as "
        "one zip, streamed (jobs without a finished image, and unknown ids, are left out)",
        response_class=StreamingResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ZIP_REQUEST_SCHEMA}},
            }
        },
        responses={**zip_answers, **_errors(413, 415)},
    )
    async def download_zip_posted(request: Request) -> StreamingResponse:
        body = parse_json_body(await request.body(), request.headers.get("content-type"))
        job_ids = zip_request_ids(body)
        # Thousands of store reads: off the event loop, as the GET's are.
        return await asyncio.to_thread(zip_of, job_ids)

    @router.post(
        "/cancel-queued",
        summary="Cancel every job that is queued now (running jobs go on)",
        response_model=Cancelled,
    )
    async def cancel_queued() -> Cancelled:
        return await asyncio.to_thread(_cancel_queued)

    def _cancel_queued() -> Cancelled:
        queued = [row.id for row in _all(store, "queued")]
        done = sum(
            (row := store.cancel(job_id)) is not None and row.status == "cancelled"
            for job_id in queued
        )
        service.hub.notify_all()
        return Cancelled(cancelled=done)

    @router.post(
        "/delete-failed",
        summary="Delete every failed job and its files",
        response_model=Deleted,
    )
    async def delete_failed() -> Deleted:
        return await asyncio.to_thread(_delete_failed)

    def _delete_failed() -> Deleted:
        gone = 0
        for row in _all(store, "failed"):
            if store.delete(row.id):
                service.delete_files(row.id)
                gone += 1
        service.hub.notify_all()
        return Deleted(deleted=gone)

    return router


def _all(store, status: str) -> list[JobRow]:
    """Every job of `status` now, newest first."""
    rows: list[JobRow] = []
    while True:
        batch = store.list(status=status, limit=_PAGE, before=rows[-1].seq if rows else None)
        rows += batch
        if len(batch) < _PAGE:
            return rows
