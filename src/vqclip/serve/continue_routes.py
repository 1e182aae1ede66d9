"""`POST /api/jobs/{id}/continue`: a new job that goes on from a finished one's last step.

The new job gets a folder of its own holding the old run's checkpoint with a larger total
(`vqclip.jobs.continuation`), so its image is the one a run asked for that many steps from the
start would make. It takes an `Idempotency-Key` as a submit does (`admission.py`); a folder
made for a request that is refused, or that a replay answers, is removed again.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from vqclip.errors import CheckpointError, ConfigError
from vqclip.jobs import continuation
from vqclip.jobs.continuation import MAX_MORE_STEPS, check_more_steps
from vqclip.serve.admission import (
    KEY_PARAMETER,
    Admission,
    created,
    idempotency_key,
    parse_json_body,
)
from vqclip.serve.options import Policy
from vqclip.serve.problems import APIError
from vqclip.serve.problems import responses as _errors
from vqclip.serve.service import Service
from vqclip.serve.store import new_job_id
from vqclip.serve.views import JobViews

_BODY_SCHEMA = {
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


def build_continue_router(service: Service, policy: Policy) -> APIRouter:
    router = APIRouter(prefix="/api")
    views = JobViews(service)
    admission = Admission(service, views)

    @router.post(
        "/jobs/{job_id}/continue",
        status_code=201,
        summary="A new job that goes on from this one's last step for `iterations` more steps",
        openapi_extra={
            "parameters": [KEY_PARAMETER],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _BODY_SCHEMA}},
            },
        },
        responses=_errors(404, 409, 413, 415, 422, 429),
    )
    async def continue_job(job_id: str, request: Request) -> JSONResponse:
        body = parse_json_body(await request.body(), request.headers.get("content-type"))
        key = idempotency_key(request, body)
        return created(*await asyncio.to_thread(_continue, job_id, body, key))

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
            job, replayed = admission.admit(
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

    return router
