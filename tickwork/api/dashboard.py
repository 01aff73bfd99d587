"""The web dashboard: a static single-page app at ``/ui`` and the JSON it needs beyond the REST API.

The page itself holds no data and is served without a token; it asks for one ("log in"), keeps
it in ``sessionStorage`` and sends it as a bearer token to every JSON endpoint, which check it
like the rest of the API (``viewer`` reads, ``admin`` also pauses, triggers and replays).

Endpoints added here:
  ``GET /dashboard/jobs``  a page of jobs with their newest run (keyset on id)
  ``GET /cluster``         leader, scheduler nodes, worker heartbeats (Redis, or this process's own
                           in the embedded mode), DLQ and PENDING counts
  ``GET /stats/timeline``  runs per minute by status and scheduling lag, for the last N minutes
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import redis
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, RedirectResponse
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from tickwork.alerts import Health
from tickwork.api.auth import Reader
from tickwork.api.ids import MAX_ID, PLAIN_DECIMAL
from tickwork.api.jobs import READ_ERRORS, check_tag_query
from tickwork.api.schemas import ApiModel, masked_definition
from tickwork.api.state import ApiState, State
from tickwork.config import Settings
from tickwork.heartbeats import HeartbeatStore
from tickwork.keys import leader_key
from tickwork.metrics import read_cluster_state
from tickwork.scheduler.leader import LocalLease
from tickwork.store import stats
from tickwork.vocabulary import utcnow

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
#: Redis answers the dashboard within this or the cluster view says "unreachable".
REDIS_TIMEOUT_SECONDS = 2.0

router = APIRouter(tags=["dashboard"])


class JobRow(ApiModel):
    id: int
    name: str
    cron_expression: str | None
    run_at: datetime | None
    timezone: str
    handler_type: str
    handler_data: str
    queue: str
    retry_count: int
    enabled: bool
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    tags: list[str] | None
    max_concurrency: int | None
    last_run_id: int | None
    last_status: str | None
    last_run_at: datetime | None
    health: str
    paused_reason: str | None
    last_success_at: datetime | None


class JobRows(ApiModel):
    """Ordered by id; pass ``nextAfterId`` as ``afterId`` for the next page (null: no more)."""

    items: list[JobRow]
    next_after_id: int | None


class Cluster(ApiModel):
    mode: str  # "redis" or "embedded"
    redis: str  # "ok", "unreachable: ..." or "not configured"
    leader: dict[str, Any] | None
    schedulers: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    dlq_size: int
    pending_runs: int
    namespace: str


class Timeline(ApiModel):
    since: datetime
    until: datetime
    minutes: list[int]
    counts: dict[str, list[int]]
    lag_avg: list[float | None]
    lag_max: list[float | None]


@router.get("/ui", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


@router.get("/ui/", include_in_schema=False)
def page_slash() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui/static/{name}", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    media_type = STATIC_FILES.get(name)
    if media_type is None:  # a fixed list: no path is ever joined from user input
        raise HTTPException(status_code=404, detail=f"no static file {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get(
    "/dashboard/jobs",
    response_model=JobRows,
    responses=READ_ERRORS,
    summary="Jobs with their newest run (dashboard)",
)
def dashboard_jobs(
    *,
    state: State,
    who: Reader,
    after_id: Annotated[int, PLAIN_DECIMAL, Query(alias="afterId", ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    name: Annotated[str | None, Query(max_length=200, description="substring of the name")] = None,
    tag: Annotated[str | None, Query(description="jobs with this tag")] = None,
    health: Annotated[Health | None, Query(description="healthy, late, failing or paused")] = None,
) -> JobRows:
    if tag is not None:
        check_tag_query(tag)
    items, next_after = stats.job_summaries(
        state.engine,
        after_id=after_id,
        limit=limit,
        name_contains=name,
        tag=tag,
        health=health.value if health else None,
    )
    rows = [JobRow.model_validate(i) for i in items]
    if who.masked:
        rows = [row.model_copy(update=_masked_handler(row)) for row in rows]
    return JobRows(items=rows, next_after_id=next_after)


def _masked_handler(row: JobRow) -> dict[str, Any]:
    return {
        "handler_data": masked_definition(row.handler_type, row.handler_data, None).get(
            "handler_data", row.handler_data
        )
    }


@router.get(
    "/cluster",
    response_model=Cluster,
    responses=READ_ERRORS,
    summary="Leader, scheduler nodes and worker heartbeats",
)
async def cluster(state: State, _: Reader) -> Cluster:
    settings = state.settings
    dlq_size, pending = await run_in_threadpool(_counts, state.engine)
    if not settings.redis_url:
        mode, redis_state, view = "embedded", "not configured", _in_process_view(state)
    else:
        mode = "redis"
        try:
            view, redis_state = await run_in_threadpool(_redis_view, settings), "ok"
        except (redis.RedisError, OSError) as exc:  # the dashboard shows the outage instead of failing
            view = {"leader": None, "schedulers": [], "workers": []}
            redis_state = f"unreachable: {type(exc).__name__}: {exc}"
    view = camel_keys(view)  # the stored heartbeats are snake_case; the API's JSON is camelCase
    return Cluster(
        mode=mode,
        redis=redis_state,
        leader=view["leader"],
        schedulers=view["schedulers"],
        workers=view["workers"],
        dlq_size=dlq_size,
        pending_runs=pending,
        namespace=settings.namespace,
    )


@router.get(
    "/stats/timeline",
    response_model=Timeline,
    responses=READ_ERRORS,
    summary="Runs per minute by status, scheduling lag",
)
def timeline(
    state: State,
    _: Reader,
    minutes: Annotated[int, Query(ge=1, le=stats.MAX_TIMELINE_MINUTES)] = 60,
) -> Timeline:
    return Timeline.model_validate(stats.run_timeline(state.engine, minutes=minutes))


def camel_keys(value: Any) -> Any:
    """``value`` with every dict key in camelCase (``node_id`` → ``nodeId``), recursively."""
    if isinstance(value, dict):
        return {to_camel(str(k)): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


def _counts(engine: Any) -> tuple[int, int]:
    return stats.dead_count(engine), stats.pending_count(engine)


def _in_process_view(state: ApiState) -> dict[str, Any]:
    """Without Redis: the in-process lease holder, this process's scheduler (the embedded mode
    registers it as ``local_schedulers``) and the in-process worker heartbeats, in the shape
    :func:`read_cluster_state` gives for Redis."""
    settings = state.settings
    holder = LocalLease.holder(leader_key(settings.namespace))
    leader = None if holder is None else {"node_id": holder[0], "ttl_ms": int(holder[1] * 1000)}
    schedulers = state.local_schedulers() if state.local_schedulers is not None else []
    store = HeartbeatStore(namespace=settings.namespace, ttl_seconds=settings.heartbeat_ttl_seconds)
    workers = []
    for beat in store.alive_workers():
        try:
            age = (utcnow() - datetime.fromisoformat(beat["beat_at"])).total_seconds()
            left: float | None = round(max(0.0, settings.heartbeat_ttl_seconds - age), 3)
        except (KeyError, TypeError, ValueError):
            left = None
        workers.append({**beat, "ttl_seconds": left})
    return {"leader": leader, "schedulers": schedulers, "workers": workers}


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _redis_view(settings: Settings) -> dict[str, Any]:
    assert settings.redis_url is not None
    with _clients_lock:
        client = _clients.get(settings.redis_url)
        if client is None:
            client = redis.Redis.from_url(
                settings.redis_url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            _clients[settings.redis_url] = client
    return read_cluster_state(client, settings.namespace)
