"""The job routes under /api/jobs: submit a job, list them, get one, cancel, delete, and fetch
a job's files (its images, video, settings, preview and thumbnail).

A submit is a JSON object whose keys are the generate options' names (plus `prompt`, `model`
and `video`), checked by the server's `Policy`; it takes an `Idempotency-Key` (`admission.py`).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from vqclip.errors import ConfigError
from vqclip.jobs import IMAGE_FILE, PREVIEW_FILE, SETTINGS_FILE, THUMB_FILE, VIDEO_FILE
from vqclip.serve.admission import (
    KEY_PARAMETER,
    Admission,
    created,
    idempotency_key,
    parse_json_body,
)
from vqclip.serve.options import Policy, public_settings, request_schema
from vqclip.serve.problems import APIError
from vqclip.serve.problems import responses as _errors
from vqclip.serve.service import Service
from vqclip.serve.store import STATUSES
from vqclip.serve.views import JobViews
from vqclip.weights.registry import PAIRS

# The files a job folder holds that the API serves; anything else there (the run checkpoint,
# frames) is the server's own.
_SERVED = (VIDEO_FILE, SETTINGS_FILE, PREVIEW_FILE, THUMB_FILE)
_FILE = re.compile(
    "|".join([rf"{Path(IMAGE_FILE).stem}(_[0-9]{{1,4}})?\.png", *map(re.escape, _SERVED)])
)
_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".mp4": "video/mp4",
    ".json": "application/json",
}


def build_job_router(service: Service, policy: Policy) -> APIRouter:
    router = APIRouter(prefix="/api")
    views = JobViews(service)
    admission = Admission(service, views)
    store = service.store

    @router.post(
        "/jobs",
        status_code=201,
        summary="Submit a job: a JSON object whose keys are the generate options' names",
        openapi_extra={
            "parameters": [KEY_PARAMETER],
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
        return created(*await asyncio.to_thread(_accept, body, key))

    def _accept(body: Any, key: tuple[str, str] | None) -> tuple[dict[str, Any], bool]:
        try:
            request = policy.job(body)
        except ConfigError as e:
            raise APIError(422, str(e), field=e.field)
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            raise APIError(422, f"the job's settings cannot be read: {e}", kind="invalid-body")
        config = request.config.to_dict()
        return admission.admit(config, key=key, model=request.model, video=request.video)

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

    @router.get(
        "/jobs/{job_id}/files/{name}",
        summary="A job's file: image(s), video, settings, preview, thumbnail",
        responses=_errors(404),
    )
    def get_file(
        job_id: str,
        name: str,
        v: str | None = Query(None, description="ignored: the page's version of the file"),
        step: str | None = Query(None, description="ignored: the step a preview shows"),
    ) -> Response:
        # `v` and `step` only make a browser fetch a file again once it has changed; they are
        # declared so that the check of unknown query parameters lets them through
        views.get_row(job_id)
        if not _FILE.fullmatch(name):
            raise APIError(
                404, f"no file {name!r}; jobs have {IMAGE_FILE}, {VIDEO_FILE}, {SETTINGS_FILE}"
            )
        path = service.job_dir(job_id) / name
        if not path.is_file():
            raise APIError(404, f"job {job_id} has no {name} (yet)")
        headers = {"Cache-Control": "no-cache"}
        if name == SETTINGS_FILE:  # uploads by ref, as in the job's `settings`
            settings = public_settings(json.loads(path.read_text()), service.uploads_dir)
            return JSONResponse(settings, headers=headers)
        return FileResponse(path, media_type=_TYPES[Path(name).suffix], headers=headers)

    return router
