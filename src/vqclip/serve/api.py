"""The JSON API under /api, one module per resource, and what the server says about itself.

    job_routes.py        submit, list, get, cancel and delete jobs; a job's files
    continue_routes.py   a new job that goes on from a finished one
    event_routes.py      progress as Server-Sent Events
    upload_routes.py     images for init images and image prompts
    gallery.py           search, a selection by id, a zip of it, cancel or delete in bulk
    prompt_reading.py    how a prompt will be read
    (here)               the server (info), the options (their schema), the kinds of problem

Errors are RFC 9457 problem details (`problems.py`) with a status that says whose fault it is:
422 for a bad option (the config's own message, and `field` naming the option), 404 for an
unknown job, 409 for an action the job's state does not allow, 413 for a body over the limit,
415 for a body that is not JSON, 429 (with Retry-After) when the queue is full. The two
endpoints that make jobs take an `Idempotency-Key` header (`admission.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from vqclip.serve.options import fields
from vqclip.serve.problems import APIError, describe
from vqclip.serve.problems import responses as _errors
from vqclip.serve.service import Service


def build_router(service: Service, info: Callable[[], dict[str, Any]]) -> APIRouter:
    """The server's own routes: /api/info (`info()` and the job counts), /api/options and
    /api/problems/{kind}."""
    router = APIRouter(prefix="/api")

    @router.get("/info", summary="The server: devices, workers, model pairs, limits, queue")
    def get_info() -> dict[str, Any]:
        return {**info(), "counts": service.store.counts()}

    @router.get("/options", summary="Every generate option: group, help, JSON schema, default")
    def get_options() -> list[dict[str, Any]]:
        return fields()

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

    return router
