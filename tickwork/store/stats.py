"""Read-only queries for the dashboard and the metrics collector.

Each one is bounded by an index so it stays fast on 10,000 jobs and millions of run rows:
jobs are paged by primary key (keyset, no OFFSET), a page's last runs come from
``ix_job_runs_job_id_id`` (one index dive per job), the status counts from
``ix_job_runs_status_enqueued`` (its ``status`` prefix) and the timeline from a ``created_at`` range on
``ix_job_runs_created_at``. ``docs/operations.md`` shows the EXPLAIN output on MariaDB.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Integer, and_, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from tickwork.store.alerts import health_expression, health_of
from tickwork.store.jobs import tag_filter
from tickwork.store.models import RunStatus, jobs_table, runs_table, utcnow

#: The charts cover at most this many minutes, so the ``created_at`` range stays bounded.
MAX_TIMELINE_MINUTES = 24 * 60


@dataclass(frozen=True)
class JobSummary:
    """One row of the dashboard's job list."""

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
    tags: list[str] | None = None
    max_concurrency: int | None = None
    last_run_id: int | None = None
    last_status: str | None = None
    last_run_at: datetime | None = None
    #: Issue 13: ``healthy``, ``late``, ``failing`` or ``paused``; why paused; last success.
    health: str = "healthy"
    paused_reason: str | None = None
    last_success_at: datetime | None = None


#: Fields of a :class:`JobSummary` computed from other tables (the newest run, the health).
_DERIVED = ("last_run_id", "last_status", "last_run_at", "health", "last_success_at")
#: The ``jobs`` columns of a :class:`JobSummary` (its fields, less the derived ones).
JOB_SUMMARY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JobSummary) if f.name not in _DERIVED)


def job_summaries(
    engine: Engine,
    *,
    after_id: int = 0,
    limit: int = 50,
    name_contains: str | None = None,
    tag: str | None = None,
    health: str | None = None,
) -> tuple[list[JobSummary], int | None]:
    """A page of jobs by id after ``after_id``, each with its newest run; and the next cursor.

    ``name_contains`` keeps names containing it (``LIKE '%text%'``, wildcards literal): the
    same rule as ``GET /jobs?name=``; ``tag`` as ``GET /jobs?tag=``. The page walks the
    primary key, so it reads at most the jobs table once.
    """
    j = jobs_table.c
    query = select(*(j[name] for name in JOB_SUMMARY_COLUMNS)).where(j.id > after_id)
    if name_contains:
        query = query.where(j.name.contains(name_contains, autoescape=True))
    if tag:
        query = query.where(tag_filter(tag))
    if health:
        query = query.where(health_expression() == health)
    query = query.order_by(j.id).limit(limit + 1)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
        more = len(rows) > limit
        rows = rows[:limit]
        last = last_runs(conn, [r["id"] for r in rows])
        healths = health_of(conn, [r["id"] for r in rows])
    items = []
    for row in rows:
        found = healths.get(row["id"])
        if found is not None:
            row.update(health=found.health, last_success_at=found.last_success_at)
        newest = last.get(row["id"])
        if newest is not None:
            row.update(
                last_run_id=newest["id"], last_status=newest["status"], last_run_at=newest["created_at"]
            )
        items.append(JobSummary(**row))
    return items, (items[-1].id if more and items else None)


def last_runs(conn: Any, job_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The newest run row of each job: ``MAX(id)`` per job on ``(job_id, id)``, then by primary key."""
    if not job_ids:
        return {}
    r = runs_table.c
    newest = (
        select(func.max(r.id).label("id")).where(r.job_id.in_(job_ids)).group_by(r.job_id).subquery("newest")
    )
    query = select(r.id, r.job_id, r.status, r.created_at).join(newest, r.id == newest.c.id)
    return {row.job_id: dict(row._mapping) for row in conn.execute(query)}


def count_by_status(engine: Engine, status: RunStatus | str) -> int:
    """Rows in one status (an index range count on ``(status, available_at)``)."""
    with engine.connect() as conn:
        query = select(func.count()).select_from(runs_table).where(runs_table.c.status == str(status))
        return int(conn.scalar(query) or 0)


def dead_count(engine: Engine) -> int:
    return count_by_status(engine, RunStatus.DEAD)


def pending_count(engine: Engine) -> int:
    return count_by_status(engine, RunStatus.PENDING)


def _minute_bucket(engine: Engine, column: Any) -> ColumnElement[Any]:
    """Minutes since the epoch of ``column`` (stored as naive UTC), per dialect."""
    if engine.dialect.name == "mysql":
        # Naive UTC in the column: TIMESTAMPDIFF from the epoch avoids the session time zone.
        return func.floor(func.timestampdiff(_literal("SECOND"), "1970-01-01 00:00:00", column) / 60)
    # ``//``: integer division (SQLAlchemy 2 compiles ``/`` on integers as a true division, and a
    # minute would split into one fractional bucket per second).
    return cast(func.strftime("%s", column), Integer) // 60


def _lag_seconds(engine: Engine) -> ColumnElement[Any]:
    r = runs_table.c
    if engine.dialect.name == "mysql":
        return func.timestampdiff(_literal("MICROSECOND"), r.scheduled_for, r.started_at) / 1_000_000.0
    return (func.julianday(r.started_at) - func.julianday(r.scheduled_for)) * 86400.0


def _literal(unit: str) -> Any:
    from sqlalchemy import literal_column

    return literal_column(unit)


def run_timeline(engine: Engine, *, minutes: int = 60, now: datetime | None = None) -> dict[str, Any]:
    """Runs created per minute by status, and the scheduling lag per minute, for the last ``minutes``.

    Lag is ``started_at - scheduled_for`` of first attempts that started (retries start late on
    purpose). Returns ``{"since", "until", "minutes": [epoch minute, ...], "counts": {status:
    [n per minute]}, "lag_avg": [...], "lag_max": [...]}`` with a slot for every minute.
    """
    minutes = max(1, min(minutes, MAX_TIMELINE_MINUTES))
    now = now or utcnow()
    until = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    since = until - timedelta(minutes=minutes)
    r = runs_table.c
    bucket = _minute_bucket(engine, r.created_at).label("minute")
    in_range = and_(r.created_at >= since, r.created_at < until)
    counts_query = (
        select(bucket, r.status, func.count().label("n")).where(in_range).group_by(bucket, r.status)
    )
    lag = _lag_seconds(engine)
    lag_query = (
        select(bucket, func.avg(lag).label("avg"), func.max(lag).label("max"))
        .where(in_range, r.attempt == 1, r.started_at.is_not(None))
        .group_by(bucket)
    )
    first = int(since.timestamp() // 60)
    slots = list(range(first, first + minutes))
    index = {m: i for i, m in enumerate(slots)}
    counts: dict[str, list[int]] = {}
    lag_avg: list[float | None] = [None] * minutes
    lag_max: list[float | None] = [None] * minutes
    with engine.connect() as conn:
        for row in conn.execute(counts_query):
            slot = index.get(int(row.minute))
            if slot is not None:
                counts.setdefault(row.status, [0] * minutes)[slot] += int(row.n)
        for row in conn.execute(lag_query):
            slot = index.get(int(row.minute))
            if slot is not None and row.avg is not None:
                lag_avg[slot] = max(0.0, float(row.avg))
                lag_max[slot] = max(0.0, float(row.max))
    return {
        "since": since,
        "until": until,
        "minutes": slots,
        "counts": counts,
        "lag_avg": lag_avg,
        "lag_max": lag_max,
    }


def explain(engine: Engine, statement: Any) -> list[dict[str, Any]]:
    """``EXPLAIN`` rows of a statement (MySQL/MariaDB), for the performance checks."""
    compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.exec_driver_sql(f"EXPLAIN {compiled}", dict(compiled.params))]
