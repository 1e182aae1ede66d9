"""The event streams (Server-Sent Events): `/api/jobs/{id}/events` follows one job (status and
queue position, progress, previews, its end) and `/api/events` the count of jobs by status.

A stream wakes when the service's `Hub` says something changed, sends only what did, and
sends a comment every `KEEPALIVE_S` while nothing does, since proxies close streams that stay
silent. A shutdown ends every stream (`Hub.stop`); the page reconnects to the next server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from vqclip.jobs import PREVIEW_FILE
from vqclip.serve.problems import responses as _errors
from vqclip.serve.service import Service
from vqclip.serve.store import FINISHED
from vqclip.serve.views import JobViews

KEEPALIVE_S = 15.0
_KEEPALIVE = ": keep-alive\n\n"


def sse(event: str, data: Any) -> str:
    """One Server-Sent Event: its name and its data as compact JSON."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def build_event_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/api")
    views = JobViews(service)
    hub, store = service.hub, service.store

    @router.get(
        "/jobs/{job_id}/events",
        summary="Server-Sent Events: `job` (status, queue position), `progress` (step, losses, "
        "it/s, ETA), `preview` (a new preview image), `end` (the finished job)",
        response_class=StreamingResponse,
        responses={**_errors(404), 200: {"content": {"text/event-stream": {}}}},
    )
    def job_events(job_id: str) -> StreamingResponse:
        views.get_row(job_id)
        return event_stream(_job_stream(job_id))

    async def _job_stream(job_id: str) -> AsyncIterator[str]:
        seen, shown, sent_step, sent_preview = -1, None, None, None
        while not hub.stopping:
            wake = hub.event(job_id)
            if hub.version != seen:
                seen = hub.version
                row, job = await asyncio.to_thread(views.snapshot, job_id)
                if row is None or job is None:
                    yield sse("end", {"id": job_id, "status": "deleted"})
                    return
                key = (job["status"], job["position"])
                if key != shown:
                    shown = key
                    yield sse("job", job)
                if row.status in FINISHED:
                    yield sse("end", job)
                    return
            live = hub.progress.get(job_id)
            if live is not None and live["step"] != sent_step:
                sent_step = live["step"]
                yield sse("progress", live)
            if live is not None and live["preview_step"] not in (0, sent_preview):
                sent_preview = live["preview_step"]
                url = f"/api/jobs/{job_id}/files/{PREVIEW_FILE}?step={sent_preview}"
                yield sse("preview", {"step": sent_preview, "url": url})
            try:
                await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
            except TimeoutError:
                yield _KEEPALIVE

    @router.get(
        "/events",
        summary="Server-Sent Events: `jobs` (the count of jobs by status) whenever jobs change",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    def all_events() -> StreamingResponse:
        return event_stream(_all_stream())

    async def _all_stream() -> AsyncIterator[str]:
        sent = None
        while not hub.stopping:
            wake = hub.event(None)
            counts = await asyncio.to_thread(store.counts)
            if counts != sent:
                sent = counts
                yield sse("jobs", {"counts": counts})
            try:
                await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
                await asyncio.sleep(0.25)  # many changes at once: one message
            except TimeoutError:
                yield _KEEPALIVE

    return router
