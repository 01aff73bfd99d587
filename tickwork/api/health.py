"""``/healthz`` (the process is up), ``/readyz`` (its services answer), ``/metrics`` (Prometheus).

These three need no token: load balancers and Prometheus do not carry one. ``/metrics``
exposes counters and latencies only, never job payloads.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from tickwork.api.schemas import Health
from tickwork.api.state import State
from tickwork.config import Settings
from tickwork.store.engine import ping

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])
CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", response_model=Health, summary="The process is up")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "a service is unreachable"}},
    summary="Database, broker and Redis are reachable",
)
def readyz(state: State) -> Any:
    checks = {
        "database": _check(lambda: _database(state.engine)),
        "broker": _check(lambda: _broker(state.settings)),
        "redis": _check(lambda: _redis(state.settings)),
    }
    ready = all(v in ("ok", "in-process") for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())


def _check(probe: Any) -> str:
    try:
        return str(probe())
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; say which
        log.warning("readiness check failed: %s", exc)
        return f"error: {type(exc).__name__}: {exc}"[:300]


def _database(engine: Any) -> str:
    ping(engine)
    return "ok"


def _broker(settings: Settings) -> str:
    if settings.embedded_broker:
        return "in-process"
    import pika

    params = pika.URLParameters(settings.broker_url)
    params.socket_timeout = CHECK_TIMEOUT_SECONDS
    params.blocked_connection_timeout = CHECK_TIMEOUT_SECONDS
    params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    connection.close()
    return "ok"


def _redis(settings: Settings) -> str:
    if not settings.redis_url:
        return "in-process"
    import redis

    client: Any = redis.Redis.from_url(
        settings.redis_url, socket_timeout=CHECK_TIMEOUT_SECONDS, socket_connect_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
def metrics(request: Request, state: State) -> Response:
    from tickwork.metrics import cluster_collector, render_latest

    collector = getattr(request.app.state, "cluster_collector", None)
    if collector is None:
        collector = cluster_collector(state.settings, state.engine)
        request.app.state.cluster_collector = collector
    body, content_type = render_latest(extra=[collector])
    return Response(body, media_type=content_type)
