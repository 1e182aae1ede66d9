"""`vqclip serve`: the web page and the job service (FastAPI + uvicorn, the `web` extra)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import re
import sys
from pathlib import Path

from vqclip.errors import ConfigError, VQClipError


def add_parser(subparsers) -> None:
    from vqclip.cli.options import add_config_options
    from vqclip.jobs import JobOptions

    p = subparsers.add_parser(
        "serve",
        help="the web page and a job queue that keeps every job",
        description="Serve the web page and its JSON API (under /api, spec at /openapi.json). "
        "Jobs and their files live in --data; a job accepted survives a crash and resumes.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--data", default="vqclip-data", help="folder of the jobs (default: ./vqclip-data)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="jobs run at once (default: one per GPU, else one); 0: accept jobs, run none",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("VQCLIP_TOKEN"),
        help="bearer token every API request must carry, at least 16 characters; needed on any "
        "interface other than loopback (default: $VQCLIP_TOKEN)",
    )
    p.add_argument(
        "--allow-model-paths",
        action="store_true",
        help="let requests name model files on this machine (default: registry names only)",
    )
    p.add_argument(
        "--allow-downloads",
        action="store_true",
        help="let requests start registry model downloads on a server others can reach "
        "(a --token or a non-loopback --host); on loopback without a token they always may",
    )
    add_config_options(p, JobOptions, only=("checkpoint_every",))
    p.add_argument(
        "--preview-every",
        type=int,
        default=5,
        metavar="N",
        help="a preview image every N steps (default: 5)",
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=16, help="largest image upload (default: 16)"
    )
    p.add_argument(
        "--max-queued",
        type=int,
        default=200,
        metavar="N",
        help="jobs waiting at most; past it a submit is refused with 429 and Retry-After "
        "(default: 200; 0: no limit)",
    )
    p.set_defaults(func=run_serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_from_args(args: argparse.Namespace):
    from vqclip.serve.service import ServeSettings

    loopback = is_loopback(args.host)
    if not loopback and not args.token:
        raise ConfigError(
            f"--host {args.host} lets other machines reach the server: give --token (or set "
            "VQCLIP_TOKEN) so only those who have it can submit and see jobs"
        )
    from vqclip.cli.options import given_options
    from vqclip.jobs import JobOptions
    from vqclip.serve.service import check_token

    check_token(args.token or None)

    job = JobOptions(**given_options(args, JobOptions))
    if args.preview_every < 1:
        raise ConfigError(f"--preview-every={args.preview_every}: give N >= 1")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers={args.workers}: give 0 or more")
    if not 0 < args.max_upload_mb <= 1024:
        raise ConfigError(f"--max-upload-mb={args.max_upload_mb}: give a size in (0, 1024]")
    if args.max_queued < 0:
        raise ConfigError(f"--max-queued={args.max_queued}: give 0 (no limit) or more")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port={args.port}: give a port in 1..65535")
    data = Path(args.data).expanduser()
    if data.exists() and not data.is_dir():
        raise ConfigError(f"--data {str(data)!r} is not a folder")
    return ServeSettings(
        data=data,
        workers=args.workers,
        token=args.token or None,
        allow_model_paths=args.allow_model_paths,
        checkpoint_every=job.checkpoint_every,
        preview_every=args.preview_every,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        trusted_hosts=(("127.0.0.1", "localhost", "::1") if loopback and not args.token else None),
        allow_downloads=True if args.allow_downloads else None,
        max_queued=args.max_queued or None,
    )


_TOKEN_QUERY = re.compile(r"([?&]token=)[^&\s]*")
# The largest request head (request line and headers) uvicorn's h11 reads. Past its default of
# 16 KB it answers 400 and closes while the client is still sending, which the client sees as
# a reset connection, not an answer: a head this large reaches the app, whose own checks answer
# a clear 4xx (an Idempotency-Key of 200 KB gets 422). Beyond it h11 still gives up.
MAX_REQUEST_HEAD_BYTES = 1 * 2**20


def _redact_tokens(record: logging.LogRecord) -> bool:
    """A `?token=` someone typed into a URL stays out of the access log."""
    if isinstance(record.args, tuple):
        record.args = tuple(
            _TOKEN_QUERY.sub(r"\1<hidden>", a) if isinstance(a, str) else a for a in record.args
        )
    return True


def _quiet_cancellations(record: logging.LogRecord) -> bool:
    """A response the shutdown cut off (a client still reading a zip when the server gave up
    waiting) is one line in the log, not a traceback of the cancellation."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, asyncio.CancelledError):
        record.msg, record.args = "a response still being sent was cut off by the shutdown", ()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
    return True


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        import uvicorn

        from vqclip.serve.app import create_app
    except ImportError as e:
        raise VQClipError(
            f"vqclip serve needs the web extra ({e.name} is missing): pip install 'vqclip[web]'"
        )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("uvicorn.access").addFilter(_redact_tokens)
    logging.getLogger("uvicorn.error").addFilter(_quiet_cancellations)
    app = create_app(settings)
    service = app.state.service
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/"
    where = ", ".join(service.devices) or "none (--workers 0)"
    print(f"vqclip serve: {url}  (jobs in {service.data}; workers on {where})", file=sys.stderr)
    if settings.token:
        print(
            f"  requests need the token: give it in the page's dialog at {url}, or send "
            "'Authorization: Bearer <token>'",
            file=sys.stderr,
        )
    if args.allow_model_paths:
        print(
            "  requests may name model files on this machine (--allow-model-paths)", file=sys.stderr
        )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
    )

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            service.hub.stop()  # the event streams end, so open pages do not hold the shutdown
            await super().shutdown(sockets)

    Server(config).run()
    return 0
