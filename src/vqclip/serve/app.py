"""The web app: the page, the JSON API and what guards them.

`create_app(settings)` builds a FastAPI app around one `Service`; its lifespan starts the
workers and, at shutdown, stops them so running jobs checkpoint and go back to the queue.

The guard (one ASGI middleware, ahead of everything) enforces what a server on a shared machine
needs: the bearer token when one is set (header, or the cookie the page's token dialog gets
from `POST /session`; never a query string, which lands in access logs and browser history),
compared in constant time; the Host header when bound to loopback without a token (so a web
page elsewhere cannot reach the server by DNS rebinding); same-origin requests only for changes
(no cross-site form posts); body size caps, checked before a handler reads the body; and the
usual security headers on every answer (a CSP without inline script, no framing, no sniffing,
no referrer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from vqclip import __version__
from vqclip.serve.admission import parse_json_body
from vqclip.serve.api import build_router
from vqclip.serve.continue_routes import build_continue_router
from vqclip.serve.event_routes import build_event_router
from vqclip.serve.gallery import build_gallery_router
from vqclip.serve.job_routes import build_job_router
from vqclip.serve.options import Policy
from vqclip.serve.problems import MEDIA_TYPE, SCHEMA, APIError, problem
from vqclip.serve.prompt_reading import build_prompt_router
from vqclip.serve.service import ServeSettings, Service, downloads_allowed
from vqclip.serve.upload_routes import build_upload_router

log = logging.getLogger("vqclip.serve")

COOKIE = "vqclip_token"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
# FastAPI's /docs page loads Swagger UI from a CDN with an inline script: no CSP there.
_NO_CSP = ("/docs", "/docs/oauth2-redirect", "/redoc")


def static_dir() -> Path:
    return Path(str(resources.files("vqclip.serve") / "static"))


def _video_available() -> bool:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def pair_ready(pair) -> bool:
    """Whether a model pair runs without a download: packaged, cached or converted weights,
    its prior's too."""
    from vqclip.weights.cache import is_cached, is_converted
    from vqclip.weights.registry import PACKAGED, find_spec

    prior = dict(pair.defaults).get("prior")
    for name in (pair.vqgan, *pair.clips, *([prior] if prior else [])):
        spec = find_spec(name)
        if name not in PACKAGED and (spec is None or not (is_cached(spec) or is_converted(spec))):
            return False
    return True


def server_info(service: Service, policy: Policy) -> dict[str, Any]:
    from vqclip.weights.registry import PAIRS

    pairs = {
        name: {
            "vqgan": pair.vqgan,
            "clip": list(pair.clips),
            "defaults": {k: list(v) if isinstance(v, tuple) else v for k, v in pair.defaults},
            "ready": pair_ready(pair),
        }
        for name, pair in PAIRS.items()
    }
    return {
        "version": __version__,
        "devices": service.devices,
        "workers": len(service.devices),
        "pairs": pairs,
        "allow_model_paths": policy.allow_model_paths,
        "video": policy.video_available,
        "preview_every": service.settings.preview_every,
        "max_upload_bytes": service.settings.max_upload_bytes,
        "max_upload_pixels": service.settings.max_upload_pixels,
        "auth": service.settings.token is not None,
        "allow_downloads": policy.allow_downloads,
    }


class Guard:
    """Token, Host, Origin and body-size checks for every HTTP request (pure ASGI, so the
    event streams pass through unbuffered)."""

    def __init__(self, app, settings: ServeSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        send = _with_security_headers(send, csp=path not in _NO_CSP)
        refusal = self._refusal(headers, path, method, scope.get("scheme", "http"))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if method in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        limit = (
            self.settings.max_upload_bytes
            if path == "/api/uploads"
            else self.settings.max_body_bytes
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _too_large(limit)(scope, receive, send)
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _refusal(self, headers: dict[str, str], path: str, method: str, scheme: str):
        trusted = self.settings.trusted_hosts
        host = _hostname(headers.get("host", ""))
        if trusted is not None and host not in trusted:
            return problem(421, f"this server answers to {', '.join(trusted)} only (Host {host!r})")
        origin = headers.get("origin")
        cross_site = origin is not None and not _same_origin(origin, headers, scheme)
        if method not in _SAFE_METHODS and cross_site:
            return problem(403, "cross-origin requests that change jobs are refused")
        token = self.settings.token
        if token is None or not _needs_token(path):
            return None
        bearer = _bearer(headers.get("authorization", ""))
        cookie = _cookie(headers.get("cookie", ""))
        if method not in _SAFE_METHODS and origin is None and bearer is None and cookie:
            # A browser sends Origin with every change it asks for: a change that signs in with
            # the page's cookie and has none did not come from this server's page. (One with
            # neither cookie nor token is simply not signed in: 401 below.)
            return problem(
                403, "a change signed in by the page's cookie must come from the page (Origin)"
            )
        given = bearer or cookie
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            return None
        response = problem(
            401,
            "this server needs its token: send 'Authorization: Bearer <token>', or give it in "
            "the page's token dialog",
        )
        response.headers["WWW-Authenticate"] = "Bearer"
        return response


def _with_security_headers(send, *, csp: bool):
    extra = _HEADERS + ([(b"content-security-policy", _CSP.encode())] if csp else [])

    async def sending(message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


def _too_large(limit: int) -> JSONResponse:
    return problem(413, f"the body is larger than this server takes ({limit} bytes)")


def _needs_token(path: str) -> bool:
    return path.startswith("/api") or path in ("/openapi.json", "/docs", "/redoc")


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _same_origin(origin: str, headers: dict[str, str], scheme: str) -> bool:
    """Whether `origin` is this server's own: the same scheme and the same host and port."""
    parts = urlsplit(origin.strip().lower())
    # Behind a TLS proxy the page is https while this server hears http: the proxy says so. A
    # page elsewhere cannot set the header (a custom header needs a preflight this server
    # never grants).
    forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return parts.scheme in (scheme, forwarded) and parts.netloc == headers.get("host", "").lower()


def _bearer(value: str) -> str | None:
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _cookie(value: str) -> str | None:
    for part in value.split(";"):
        name, _, content = part.strip().partition("=")
        if name == COOKIE and content:
            return unquote(content)
    return None


def _query_names(dependant) -> set[str]:
    """The query parameters a route takes: its own and its dependencies'."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def _known_query_only(request: Request) -> None:
    """An API endpoint refuses query parameters it does not take, naming them (docs/web.md):
    a misspelt `?limt=5` would otherwise be ignored without a word. The page (`/`) takes any
    (an old bookmark's `?token=` is redirected away)."""
    if not request.url.path.startswith("/api"):
        return
    route = request.scope.get("route")
    if route is None:  # a FastAPI that does not record the route: found by its endpoint
        endpoint = request.scope.get("endpoint")
        route = next((r for r in request.app.routes if getattr(r, "endpoint", 0) is endpoint), None)
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise APIError(
            422,
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"({request.method} {request.url.path}: {takes})",
            kind="invalid-option",
            field=unknown[0],
        )


def _problems_in_schema(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document with every error answer as problem details (FastAPI adds its own
    422 shape to routes with parameters)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                for status, answer in operation.get("responses", {}).items():
                    if status[:1] in ("4", "5"):
                        answer["content"] = {MEDIA_TYPE: {"schema": SCHEMA}}
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: ServeSettings) -> FastAPI:
    """The app for `settings`: its workers are processes, started with the app's lifespan."""
    service = Service(settings)
    policy = Policy(
        uploads=service.uploads_dir,
        allow_model_paths=settings.allow_model_paths,
        video_available=_video_available(),
        allow_downloads=downloads_allowed(settings),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.hub.attach(asyncio.get_running_loop())
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="vqclip",
        version=__version__,
        description="VQGAN+CLIP text to image: a queue of generation jobs that survives restarts.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        dependencies=[Depends(_known_query_only)],
    )
    app.state.service = service
    app.add_middleware(Guard, settings=settings)
    app.openapi = lambda: _problems_in_schema(app)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Starlette's own (an unknown path, a method a path does not take)."""
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            detail = f"no such page or endpoint: {request.url.path} (the API is under /api)"
        return problem(exc.status_code, detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A query or path parameter out of its declared range (e.g. ?limit=0)."""
        errors = [
            {"pointer": "/" + "/".join(str(p) for p in e["loc"][1:]), "detail": e["msg"]}
            for e in exc.errors()
        ]
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "bad parameters"}
        name = str(first["loc"][-1]) if first["loc"] else None
        detail = f"{name}: {first['msg']}" if name else str(first["msg"])
        return problem(422, detail, kind="invalid-option", field=name, errors=errors)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, f"internal error: {type(exc).__name__}")

    app.include_router(build_router(service, lambda: server_info(service, policy)))
    app.include_router(build_job_router(service, policy))
    app.include_router(build_continue_router(service, policy))
    app.include_router(build_upload_router(service))
    app.include_router(build_event_router(service))
    app.include_router(build_gallery_router(service))
    app.include_router(build_prompt_router())
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page(request: Request):  # HEAD: the answer of GET without its body
        if "token" in parse_qs(request.url.query):  # an old bookmark: out of the history
            return RedirectResponse("/", status_code=303)
        return FileResponse(static_dir() / "index.html", headers={"Cache-Control": "no-cache"})

    @app.post("/session", include_in_schema=False)
    async def session(request: Request) -> Response:
        """The page's token dialog: the right token gets the cookie that stands for it."""
        body = parse_json_body(await request.body(), request.headers.get("content-type"))
        token = body.get("token") if isinstance(body, dict) else None
        if settings.token is None:
            return Response(status_code=204)
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode(), settings.token.encode()
        ):
            return problem(401, "that is not this server's token")
        response = Response(status_code=204)
        response.set_cookie(COOKIE, quote(token), httponly=True, samesite="strict")
        return response

    return app
