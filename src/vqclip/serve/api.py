"""The JSON API under /api: submit, list, get, cancel, delete and continue jobs, stream their
progress (Server-Sent Events), fetch their files, upload images.

Errors are RFC 9457 problem details (`problems.py`) with a status that says whose fault it is:
422 for a bad option (the config's own message, and `field` naming the option), 404 for an
unknown job, 409 for an action the job's state does not allow, 413 for a body over the limit,
415 for a body that is not JSON, 429 (with Retry-After) when the queue is full.

The two endpoints that make jobs take an `Idempotency-Key` header: a request retried with the
same key (and the same body) gets the job the first one made, marked `Idempotent-Replayed:
true`, instead of a second job; the same key with another body is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from vqclip.errors import CheckpointError, ConfigError
from vqclip.jobs import SETTINGS_FILE, continuation
from vqclip.jobs.continuation import MAX_MORE_STEPS, check_more_steps
from vqclip.serve.options import Policy, fields, public_settings, request_schema
from vqclip.serve.problems import APIError, describe
from vqclip.serve.problems import responses as _errors
from vqclip.serve.service import Service
from vqclip.serve.store import (
    FINISHED,
    STATUSES,
    KeyReused,
    QueueFull,
    new_job_id,
)
from vqclip.serve.uploads import is_upload_name, store_upload
from vqclip.serve.views import JobViews
from vqclip.serve.worker import PREVIEW_FILE
from vqclip.weights.registry import PAIRS

KEEPALIVE_S = 15.0
_FILE = re.compile(r"image(_[0-9]{1,4})?\.png|video\.mp4|settings\.json|preview\.png|thumb\.jpg")
_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".mp4": "video/mp4",
    ".json": "application/json",
}


MAX_KEY_CHARS = 255
_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_CHARS}}}")  # visible ASCII, as HTTP tokens go
_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
    "description": "a key of the client's choosing (e.g. a UUID): a retry with the same key "
    "and body returns the first job instead of making another (remembered for a day)",
}


def parse_json_body(body: bytes, content_type: str | None) -> Any:
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise APIError(415, "send the job as JSON with Content-Type: application/json")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise APIError(422, f"the body is not valid JSON: {e}", kind="invalid-body")


def idempotency_key(request: Request, body: Any) -> tuple[str, str] | None:
    """The request's Idempotency-Key and a fingerprint of what it asks (path and body)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise APIError(
            422,
            f"Idempotency-Key {key[:40]!r}: give 1 to {MAX_KEY_CHARS} visible ASCII characters "
            "(e.g. a UUID)",
            kind="invalid-body",
        )
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return key, hashlib.sha256(f"{request.url.path}\n{canonical}".encode()).hexdigest()


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def build_router(service: Service, policy: Policy, info: Callable[[], dict[str, Any]]) -> APIRouter:
    router = APIRouter(prefix="/api")
    views = JobViews(service)
    store = service.store

    @router.get("/info", summary="The server: devices, workers, model pairs, limits, queue")
    def get_info() -> dict[str, Any]:
        return {**info(), "counts": store.counts()}

    @router.get("/options", summary="Every generate option: group, help, JSON schema, default")
    def get_options() -> list[dict[str, Any]]:
        return fields()

    @router.post(
        "/jobs",
        status_code=201,
        summary="Submit a job: a JSON object whose keys are the generate options' names",
        openapi_extra={
            "parameters": [_KEY_PARAMETER],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema(list(PAIRS))}},
            },
        },
        responses=_errors(413, 415, 422, 429),
    )
    async def submit(request: Request) -> JSONResponse:
        body = parse_json_body(await request.body(), request.headers.get("content-type"))
        key = idempotency_key(request, body)
        return _created(*await asyncio.to_thread(_accept, body, key))

    def _accept(body: Any, key: tuple[str, str] | None) -> tuple[dict[str, Any], bool]:
        try:
            request = policy.job(body)
        except ConfigError as e:
            raise APIError(422, str(e), field=e.field)
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            raise APIError(422, f"the job's settings cannot be read: {e}", kind="invalid-body")
        return _admit(request.config.to_dict(), key=key, model=request.model, video=request.video)

    def _admit(config: dict[str, Any], **how: Any) -> tuple[dict[str, Any], bool]:
        """Queue a job (or find the one its Idempotency-Key made); the job as shown, and
        whether it was there already."""
        try:
            settings = service.settings
            row, replayed = store.admit(
                config, max_queued=settings.max_queued, workers=settings.running, **how
            )
        except KeyReused as e:
            raise APIError(
                422,
                f"Idempotency-Key {e.args[0]!r} was used for a different request; "
                "send a new key with a new request",
                kind="idempotency-key-reused",
            )
        except QueueFull as e:
            raise APIError(
                429,
                f"the queue is full: {e.queued} jobs are waiting (this server takes "
                f"{e.limit}); try again in about {e.retry_after} s",
                headers={"Retry-After": str(e.retry_after)},
            )
        if not replayed:
            service.hub.notify_counts()
        return views.show(row, store.position(row)), replayed

    def _created(job: dict[str, Any], replayed: bool) -> JSONResponse:
        headers = {"Location": f"/api/jobs/{job['id']}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(job, status_code=201, headers=headers)

    @router.get("/jobs", summary="Jobs, newest first", responses=_errors(422))
    def list_jobs(
        status: str | None = Query(None, description=f"one of {', '.join(STATUSES)}"),
        limit: int = Query(50, ge=1, le=500),
        before: int | None = Query(None, ge=0, le=2**62, description="the `next` of a page"),
    ) -> dict[str, Any]:
        if status is not None and status not in STATUSES:
            raise APIError(422, f"status={status!r}: choose from {', '.join(STATUSES)}")
        rows = store.list(status=status, limit=limit, before=before)
        return {
            "jobs": [views.show(r, store.position(r)) for r in rows],
            "counts": store.counts(),
            "next": rows[-1].seq if len(rows) == limit else None,
        }

    @router.get(
        "/jobs/{job_id}",
        summary="One job: status, progress, settings, file URLs",
        responses=_errors(404),
    )
    def get_job(job_id: str) -> dict[str, Any]:
        return views.one(job_id)

    @router.post(
        "/jobs/{job_id}/cancel",
        summary="Cancel a queued job, or stop a running one after its step under way",
        responses=_errors(404, 409),
    )
    def cancel_job(job_id: str) -> dict[str, Any]:
        row = views.get_row(job_id)
        if row.status in ("done", "partial", "failed"):
            raise APIError(409, f"job {job_id} is {row.status}; there is nothing to cancel")
        service.cancel(job_id)
        return views.one(job_id)

    @router.delete(
        "/jobs/{job_id}",
        status_code=204,
        summary="Delete a job and its files (cancel a running job first)",
        responses=_errors(404, 409),
    )
    def delete_job(job_id: str) -> Response:
        views.get_row(job_id)
        if not store.delete(job_id):
            raise APIError(409, f"job {job_id} is running; cancel it first")
        service.delete_files(job_id)
        service.hub.notify_all()
        return Response(status_code=204)

    @router.post(
        "/jobs/{job_id}/continue",
        status_code=201,
        summary="A new job that goes on from this one's last step for `iterations` more steps",
        openapi_extra={
            "parameters": [_KEY_PARAMETER],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "iterations": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "maximum": MAX_MORE_STEPS,
                                    "description": "how many more steps",
                                },
                                "video": {"type": "boolean"},
                            },
                            "required": ["iterations"],
                            "additionalProperties": False,
                        }
                    }
                },
            },
        },
        responses=_errors(404, 409, 413, 415, 422, 429),
    )
    async def continue_job(job_id: str, request: Request) -> JSONResponse:
        body = parse_json_body(await request.body(), request.headers.get("content-type"))
        key = idempotency_key(request, body)
        return _created(*await asyncio.to_thread(_continue, job_id, body, key))

    def _continue(
        job_id: str, body: Any, key: tuple[str, str] | None
    ) -> tuple[dict[str, Any], bool]:
        parent = views.get_row(job_id)
        if not isinstance(body, dict) or set(body) - {"iterations", "video"}:
            raise APIError(
                422,
                'give {"iterations": N}: how many more steps (and "video")',
                kind="invalid-body",
            )
        more, video = body.get("iterations"), body.get("video", parent.video)
        try:
            check_more_steps(more)
        except ConfigError as e:
            raise APIError(422, str(e), field=e.field)
        if not isinstance(video, bool) or (video and not policy.video_available):
            raise APIError(
                422,
                f"video={video!r}: expected true or false (and imageio-ffmpeg)",
                field="video",
            )
        if parent.status not in ("done", "partial", "cancelled"):
            raise APIError(
                409, f"job {job_id} is {parent.status}; continue a done or cancelled job"
            )
        child = new_job_id()
        folder = service.job_dir(child)
        try:
            config = continuation.continue_job(service.job_dir(job_id), folder, more, frames=video)
        except CheckpointError:
            # The reason names the server's folders and the CLI's flags: not the page's words.
            raise APIError(
                409,
                f"job {job_id} cannot be continued: its saved run is missing or unreadable; "
                "start a new job from its settings instead",
            )
        except ConfigError as e:  # the new total is past the declared bound
            raise APIError(422, str(e), field=e.field)
        try:
            job, replayed = _admit(
                config.to_dict(),
                key=key,
                model=parent.model,
                video=video,
                parent=job_id,
                job_id=child,
            )
        except APIError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if replayed:  # the first request's child is the job; this one's folder is not needed
            shutil.rmtree(folder, ignore_errors=True)
        return job, replayed

    @router.get(
        "/jobs/{job_id}/files/{name}",
        summary="A job's file: image(s), video, settings, preview, thumbnail",
        responses=_errors(404),
    )
    def get_file(job_id: str, name: str) -> Response:
        views.get_row(job_id)
        if not _FILE.fullmatch(name):
            raise APIError(404, f"no file {name!r}; jobs have image.png, video.mp4, settings.json")
        path = service.job_dir(job_id) / name
        if not path.is_file():
            raise APIError(404, f"job {job_id} has no {name} (yet)")
        headers = {"Cache-Control": "no-cache"}
        if name == SETTINGS_FILE:  # uploads by ref, as in the job's `settings`
            settings = public_settings(json.loads(path.read_text()), service.uploads_dir)
            return JSONResponse(settings, headers=headers)
        return FileResponse(path, media_type=_TYPES[Path(name).suffix], headers=headers)

    @router.post(
        "/uploads",
        status_code=201,
        summary="Upload an image (init image, image prompt); the body is the image file",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
        responses=_errors(413, 422),
    )
    async def upload(request: Request) -> JSONResponse:
        data = await request.body()
        try:
            stored = await asyncio.to_thread(
                store_upload, data, service.uploads_dir, service.settings.max_upload_pixels
            )
        except ConfigError as e:
            raise APIError(422, str(e), kind="invalid-body")
        answer = {
            "ref": stored.ref,
            "url": f"/api/uploads/{stored.name}",
            "width": stored.width,
            "height": stored.height,
        }
        return JSONResponse(answer, status_code=201)

    @router.get(
        "/problems/{kind}",
        summary="What a kind of error means (the `type` of an error answer points here)",
        responses=_errors(404),
    )
    def get_problem(kind: str) -> dict[str, Any]:
        described = describe(kind)
        if described is None:
            raise APIError(404, f"no kind of problem {kind!r}")
        return described

    @router.get("/uploads/{name}", summary="An uploaded image", responses=_errors(404))
    def get_upload(name: str) -> FileResponse:
        path = service.uploads_dir / name
        if not is_upload_name(name) or not path.is_file():
            raise APIError(404, f"no upload {name!r}")
        return FileResponse(path, media_type="image/png")

    @router.get(
        "/jobs/{job_id}/events",
        summary="Server-Sent Events: `job` (status, queue position), `progress` (step, losses, "
        "it/s, ETA), `preview` (a new preview image), `end` (the finished job)",
        response_class=StreamingResponse,
        responses={**_errors(404), 200: {"content": {"text/event-stream": {}}}},
    )
    def job_events(job_id: str) -> StreamingResponse:
        views.get_row(job_id)
        return _stream(_job_stream(job_id))

    async def _job_stream(job_id: str):
        hub, seen, shown, sent_step, sent_preview = service.hub, -1, None, None, None
        while True:
            wake = hub.event(job_id)
            if hub.version != seen:
                seen = hub.version
                row, job = await asyncio.to_thread(views.snapshot, job_id)
                if row is None or job is None:
                    yield _sse("end", {"id": job_id, "status": "deleted"})
                    return
                key = (job["status"], job["position"])
                if key != shown:
                    shown = key
                    yield _sse("job", job)
                if row.status in FINISHED:
                    yield _sse("end", job)
                    return
            live = hub.progress.get(job_id)
            if live is not None and live["step"] != sent_step:
                sent_step = live["step"]
                yield _sse("progress", live)
            if live is not None and live["preview_step"] not in (0, sent_preview):
                sent_preview = live["preview_step"]
                url = f"/api/jobs/{job_id}/files/{PREVIEW_FILE}?step={sent_preview}"
                yield _sse("preview", {"step": sent_preview, "url": url})
            try:
                await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"  # proxies close streams that stay silent

    @router.get(
        "/events",
        summary="Server-Sent Events: `jobs` (the count of jobs by status) whenever jobs change",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    def all_events() -> StreamingResponse:
        return _stream(_all_stream())

    async def _all_stream():
        hub, sent = service.hub, None
        while True:
            wake = hub.event(None)
            counts = await asyncio.to_thread(store.counts)
            if counts != sent:
                sent = counts
                yield _sse("jobs", {"counts": counts})
            try:
                await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
                await asyncio.sleep(0.25)  # many changes at once: one message
            except TimeoutError:
                yield ": keep-alive\n\n"

    return router


def _stream(gen) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(gen, media_type="text/event-stream", headers=headers)
