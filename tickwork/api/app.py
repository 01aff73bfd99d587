"""The FastAPI application: ``create_app(settings)`` wires the routers to one database and broker."""

from __future__ import annotations

import importlib
import json
import logging
from typing import Any

import dramatiq
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import tickwork
from tickwork import tracing
from tickwork.api import dlq, events, health, jobs, notifications, runs
from tickwork.api.auth import Reader
from tickwork.api.errors import install_error_handlers
from tickwork.api.state import ApiState, JobChangedHook, redis_wake_hook
from tickwork.api.strict_query import reject_unknown_query
from tickwork.config import Settings
from tickwork.config.settings import resolve_auth_secret
from tickwork.notify import check_notify_url
from tickwork.store.engine import make_engine

log = logging.getLogger(__name__)

DESCRIPTION = """\
Jobs, their schedules and their run log. Every endpoint except `/healthz`, `/readyz` and
`/metrics` needs a bearer token (`tickwork token --role admin|viewer`): `viewer` reads, `admin`
also writes; this document too (`GET /openapi.json` with a `viewer` token). Invalid input,
including a body over `TICKWORK_MAX_PAYLOAD_BYTES`, is answered 422 with
`{"detail": [{"field", "reason"}]}`.
"""


class BodyLimit:
    """Answer 422 (field ``body``) to a request body larger than ``max_bytes`` before the app
    parses it. At most ``max_bytes`` are ever read: a declared ``Content-Length`` over the limit
    is refused before reading, a chunked (or lying) body as soon as the bytes read pass it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(send, f"{int(value)} bytes")
                return
        # Chunked (or lying) clients: buffer up to the limit, then replay to the app.
        chunks: list[bytes] = []
        size = 0
        more = scope["method"] in ("POST", "PUT", "PATCH", "DELETE")
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send, f"at least {size} bytes")
                return
            chunks.append(chunk)
            more = bool(message.get("more_body"))
        replayed = False
        body = b"".join(chunks)
        if body and not _is_utf8(body):
            await self._refuse(send, "must be JSON encoded as UTF-8")
            return

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, size: str) -> None:
        await self._refuse(send, f"{size}, more than TICKWORK_MAX_PAYLOAD_BYTES ({self.max_bytes})")

    async def _refuse(self, send: Send, reason: str) -> None:
        error = {"field": "body", "reason": reason, "loc": ["body"], "msg": reason, "type": "value_error"}
        payload = json.dumps({"detail": [error]}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 422,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(payload)),
                    # The rest of the body is not read: the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _is_utf8(body: bytes) -> bool:
    """JSON bodies are UTF-8 (RFC 8259). Python's parser also guesses UTF-16 and UTF-32 from
    the NUL bytes around ASCII characters (which are valid UTF-8 themselves), so ask it too."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return json.detect_encoding(body) in ("utf-8", "utf-8-sig")


#: Sent with every answer. The dashboard loads only its own script and stylesheet and sets
#: styles through the DOM, so its page needs no 'unsafe-inline'; nothing may frame it.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every HTTP answer (API, dashboard, errors) that has not
    set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    broker: dramatiq.Broker | None = None,
    on_job_changed: JobChangedHook | None = None,
) -> FastAPI:
    """The REST API on ``engine`` (default: ``settings.database_url``) and ``broker``.

    ``broker`` defaults to one made from ``settings`` on first use. ``on_job_changed(job_id)``
    runs after a job is created, changed or resumed; by default it publishes on the scheduler
    wake channel when Redis is configured (the embedded mode passes the scheduler's ``wake``).

    Tokens are verified with ``settings.auth_secret``, resolved first (:func:`resolve_auth_secret`):
    raises ``ConfigError`` (``TICKWORK_AUTH_SECRET``) for a shared deployment (MySQL or RabbitMQ)
    without a secret of its own, or an embedded database whose secret file cannot be used.
    """
    settings = resolve_auth_secret(settings)
    tracing.configure(settings.traces_exporter, "tickwork-api")
    check_notify_url(settings)  # issue 13: the deny list applies to TICKWORK_NOTIFY_URL
    # The OpenAPI document needs a token like the data it describes (``/openapi.json`` below);
    # Swagger UI and ReDoc would fetch it without one, so they are not served.
    app = FastAPI(
        title="tickwork",
        version=tickwork.__version__,
        description=DESCRIPTION,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(reject_unknown_query)],
    )
    if on_job_changed is None:
        on_job_changed = redis_wake_hook(settings)
    app.state.tickwork = ApiState(
        settings=settings,
        engine=engine if engine is not None else make_engine(settings),
        broker=broker,
        on_job_changed=on_job_changed,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(runs.router)
    app.include_router(dlq.router)
    app.include_router(events.router)
    app.include_router(notifications.router)
    dashboard = _optional_router("tickwork.api.dashboard")
    if dashboard is not None:
        app.include_router(dashboard)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document(_: Reader) -> JSONResponse:
        return JSONResponse(app.openapi())

    app.add_middleware(BodyLimit, max_bytes=settings.max_payload_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: also on BodyLimit's own 422
    return app


def _optional_router(module: str) -> Any:
    """The dashboard is another part's; mount it when it is installed."""
    try:
        return importlib.import_module(module).router
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None
