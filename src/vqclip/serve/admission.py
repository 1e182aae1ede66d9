"""How a request becomes a queued job, for the two endpoints that make jobs (submit and
continue): the JSON body read, its `Idempotency-Key` checked, the job admitted to the store (or
the one the key made found again), and the 201 that points at it.

A request retried with the same key (and the same body) gets the job the first one made, marked
`Idempotent-Replayed: true`, instead of a second job; the same key with another body is
refused. A full queue is 429 with a Retry-After.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from vqclip.serve.problems import APIError
from vqclip.serve.service import Service
from vqclip.serve.store import KeyReused, QueueFull
from vqclip.serve.views import JobViews

MAX_KEY_CHARS = 255
_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_CHARS}}}")  # visible ASCII, as HTTP tokens go
KEY_PARAMETER = {
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


class Admission:
    """Queues the jobs requests make, with the service's queue limit and the views' answer."""

    def __init__(self, service: Service, views: JobViews) -> None:
        self.service, self.views = service, views

    def admit(self, config: dict[str, Any], **how: Any) -> tuple[dict[str, Any], bool]:
        """Queue a job (or find the one its Idempotency-Key made); the job as shown, and
        whether it was there already. `how`: the store's `admit` arguments (key, model,
        video, parent, job_id)."""
        store, settings = self.service.store, self.service.settings
        try:
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
            self.service.hub.notify_counts()
        return self.views.show(row, store.position(row)), replayed


def created(job: dict[str, Any], replayed: bool) -> JSONResponse:
    """201 with the job and its Location; a replay says so."""
    headers = {"Location": f"/api/jobs/{job['id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(job, status_code=201, headers=headers)
