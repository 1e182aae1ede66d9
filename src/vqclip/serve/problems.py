"""Errors as RFC 9457 problem details, the same on every endpoint.

An error answer is `application/problem+json`: `type` (a URI reference to the kind of problem;
`GET` on it describes the kind), `title` (the kind, in words), `status`, `detail` (this
occurrence: what was wrong and what to do) and, when one option is at fault, `field` (its name)
and `errors` (`[{"pointer": "/name", "detail": ...}]`, the RFC's form for validation errors).
Clients that only read `detail` keep working.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "/api/problems/"

# kind -> (status, title, what it means and what to do)
KINDS: dict[str, tuple[int, str, str]] = {
    "invalid-option": (
        422,
        "An option has a bad value",
        "A job's setting is out of range, of the wrong type, unknown, or does not go with "
        "another; `field` names it and `detail` says what it takes.",
    ),
    "invalid-body": (
        422,
        "The body cannot be read",
        "The body is not valid JSON, or not of the shape the endpoint takes.",
    ),
    "idempotency-key-reused": (
        422,
        "An Idempotency-Key was used for another request",
        "A key stands for one request: send a new key with a request that differs.",
    ),
    "unsupported-media-type": (
        415,
        "The body is not of the expected type",
        "Send JSON with Content-Type: application/json (uploads: the image file itself).",
    ),
    "not-found": (404, "No such job, file or page", "The id or name is not known here."),
    "wrong-state": (
        409,
        "Not in the job's present state",
        "The action does not apply to a job in its present state (e.g. cancel a done job).",
    ),
    "too-large": (413, "The body is too large", "The server's limit is in `detail`."),
    "token-needed": (
        401,
        "A token is needed",
        "Send 'Authorization: Bearer <token>', or give the token in the page's dialog.",
    ),
    "cross-origin": (
        403,
        "Cross-origin changes are refused",
        "Requests that change jobs must come from the server's own page or a non-browser client.",
    ),
    "wrong-host": (
        421,
        "This server does not answer to that Host",
        "A server on loopback without a token answers to loopback names only.",
    ),
    "queue-full": (
        429,
        "The queue is full",
        "The server holds as many queued jobs as it takes (its --max-queued); try again after "
        "the Retry-After seconds, when some have run.",
    ),
    "method-not-allowed": (
        405,
        "Method not allowed",
        "The path exists but does not take this method.",
    ),
    "internal": (500, "Internal error", "A bug in the server; its log has the traceback."),
}
_BY_STATUS = {
    422: "invalid-option",
    415: "unsupported-media-type",
    404: "not-found",
    409: "wrong-state",
    413: "too-large",
    401: "token-needed",
    403: "cross-origin",
    421: "wrong-host",
    429: "queue-full",
    405: "method-not-allowed",
    500: "internal",
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "description": "URI reference of the kind of problem"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what was wrong and what to do"},
        "field": {"type": "string", "description": "the option at fault, where there is one"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}


def problem(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    field: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    kind = kind or _BY_STATUS.get(status)
    if kind is None:
        body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase}
    else:
        body = {"type": TYPE_BASE + kind, "title": KINDS[kind][1]}
    body |= {"status": status, "detail": detail}
    if field is not None:
        body["field"] = field
        errors = errors or [{"pointer": f"/{field}", "detail": detail}]
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses."""
    return {
        code: {
            "description": KINDS[_BY_STATUS[code]][1],
            "content": {MEDIA_TYPE: {"schema": SCHEMA}},
        }
        for code in codes
    }


def describe(kind: str) -> dict[str, Any] | None:
    if kind not in KINDS:
        return None
    status, title, text = KINDS[kind]
    return {"type": TYPE_BASE + kind, "title": title, "status": status, "description": text}


class APIError(Exception):
    """An error answer: `kind` of problem (default: the status's), `field` at fault."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.kind = status, detail, kind
        self.field, self.headers = field, headers

    def response(self) -> JSONResponse:
        return problem(
            self.status, self.detail, kind=self.kind, field=self.field, headers=self.headers
        )
