"""SQL of alerts: health, late fires, auto-pause, recovery, and recording notifications.

Every notification is inserted in the same transaction as the state change it reports (a run
going DEAD, a job paused, a fire marked late, a job recovered), so a crash either loses both or
neither: delivery (:mod:`tickwork.notify`) is then at-least-once. Each state change is a
compare-and-set, so several schedulers (or a worker and a sweep) report a change once.
The rules themselves are in :mod:`tickwork.alerts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from tickwork.alerts import (
    Event,
    Health,
    auto_pause_reason,
    fire_is_late,
    job_document,
    missing_fire_document,
    notification_body,
    notification_targets,
    run_document,
    success_recovers,
)
from tickwork.store.engine import delete_in_batches
from tickwork.store.events import record_auto_pause
from tickwork.store.models import (
    NotificationStatus,
    RunStatus,
    RunTrigger,
    jobs_table,
    notifications_table,
    runs_table,
    utcnow,
    watermarks_table,
)
from tickwork.store.runs import finish_attempt

J = jobs_table.c
R = runs_table.c
N = notifications_table.c
W = watermarks_table.c

#: Jobs decided in one transaction of the late sweep.
LATE_SWEEP_CHUNK = 100
#: Fires one transaction of the late sweep looks at, at most (the rest on the next sweep).
LATE_SCAN_LIMIT = 2000
#: Jobs one recovery sweep looks at, at most.
RECOVERY_SCAN_LIMIT = 1000
#: Successes since the last report looked at per job and sweep (for an on-time one).
RECOVERY_SUCCESS_LIMIT = 200

# -- health -------------------------------------------------------------------------------------


def last_success_at() -> Any:
    """The finish time of a job's newest SUCCESS attempt (a correlated subquery on ``jobs``)."""
    return (
        select(R.finished_at)
        .where(R.job_id == J.id, R.status == RunStatus.SUCCESS.value)
        .order_by(R.id.desc())
        .limit(1)
        .correlate(jobs_table)
        .scalar_subquery()
    )


def last_final_status() -> Any:
    """The status of a job's newest finished run, SUCCESS or DEAD (a correlated subquery)."""
    return (
        select(R.status)
        .where(R.job_id == J.id, R.status.in_([RunStatus.SUCCESS.value, RunStatus.DEAD.value]))
        .order_by(R.id.desc())
        .limit(1)
        .correlate(jobs_table)
        .scalar_subquery()
    )


def health_expression() -> ColumnElement[str]:
    """:func:`tickwork.alerts.job_health` in SQL, so ``GET /jobs?health=`` filters and pages."""
    return case(
        (J.enabled.is_(False), Health.PAUSED.value),
        (J.late_since.is_not(None), Health.LATE.value),
        (last_final_status() == RunStatus.DEAD.value, Health.FAILING.value),
        else_=Health.HEALTHY.value,
    )


@dataclass(frozen=True)
class JobHealth:
    job_id: int
    name: str
    health: str
    last_success_at: datetime | None


def health_of(engine: Engine | Connection, job_ids: list[int] | None = None) -> dict[int, JobHealth]:
    """Health and last success of the given jobs (all jobs when None)."""
    query = select(J.id, J.name, health_expression().label("health"), last_success_at().label("last_success"))
    if job_ids is not None:
        if not job_ids:
            return {}
        query = query.where(J.id.in_(job_ids))
    conn_or_engine = engine
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            rows = list(conn.execute(query))
    else:
        rows = list(conn_or_engine.execute(query))
    return {
        int(row.id): JobHealth(int(row.id), row.name, str(row.health), _aware(row.last_success))
        for row in rows
    }


def _aware(value: datetime | None) -> datetime | None:
    """A scalar subquery's column loses the UTCDateTime type: naive UTC comes back."""
    from datetime import UTC

    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


# -- recording ----------------------------------------------------------------------------------


def notification_rows(
    event: Event, job: Any, run: dict[str, Any] | None, *, notify_url: str | None, now: datetime
) -> list[dict[str, Any]]:
    """The outbox rows of one event: one PENDING row per target (none when nothing is set)."""
    targets = notification_targets(notify_url, job.notify_url)
    if not targets:
        return []
    body = notification_body(event, now, job_document(job), run)
    run_id = run.get("id") if run else None
    return [
        {
            "event": event.value,
            "job_id": job.id,
            "run_id": run_id,
            "target": target,
            "payload": body,
            "status": NotificationStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for target in targets
    ]


def record_notifications(
    conn: Connection,
    event: Event,
    job: Any,
    run: dict[str, Any] | None,
    *,
    notify_url: str | None,
    now: datetime,
) -> int:
    """Insert one PENDING notification per target, in the caller's transaction."""
    rows = notification_rows(event, job, run, notify_url=notify_url, now=now)
    if rows:
        conn.execute(insert(notifications_table), rows)
    return len(rows)


def _job(conn: Connection, job_id: int) -> Any:
    return conn.execute(select(jobs_table).where(J.id == job_id)).first()


def _run(conn: Connection, run_id: int) -> Any:
    return conn.execute(select(runs_table).where(R.id == run_id)).first()


# -- a run goes DEAD ----------------------------------------------------------------------------


def finish_dead(
    engine: Engine,
    run_id: int,
    worker_id: str,
    *,
    notify_url: str | None,
    **values: Any,
) -> bool:
    """RUNNING → DEAD (as :func:`~tickwork.store.runs.finish_attempt`) and, in the same
    transaction, what follows a dead run: ``run.dead``, and the auto-pause with ``job.paused``.
    False (and nothing written) if the attempt was not ours to finish."""
    now = values.pop("now", None) or utcnow()
    with engine.begin() as conn:
        if not finish_attempt(conn, run_id, worker_id, status=RunStatus.DEAD, now=now, **values):
            return False
        after_run_dead(conn, run_id, notify_url=notify_url, now=now)
        return True


def after_run_dead(conn: Connection, run_id: int, *, notify_url: str | None, now: datetime) -> bool:
    """Record ``run.dead`` and pause the job if its last ``pauseAfterFailures`` runs are DEAD.

    Call inside the transaction that made the run DEAD. Returns True if the job was paused
    (compare-and-set on ``enabled``: of several racing callers one pauses and notifies).
    """
    run = _run(conn, run_id)
    if run is None:
        return False
    conn.execute(update(jobs_table).where(J.id == run.job_id).values(failing_since=now))
    job = _job(conn, run.job_id)
    if job is None:
        return False
    record_notifications(conn, Event.RUN_DEAD, job, run_document(run), notify_url=notify_url, now=now)
    if not job.enabled or not job.pause_after_failures:
        return False
    recent = select(R.status).where(
        R.job_id == job.id, R.status.in_([RunStatus.SUCCESS.value, RunStatus.DEAD.value])
    )
    if job.resumed_at is not None:
        recent = recent.where(R.created_at >= job.resumed_at)
    statuses = list(conn.scalars(recent.order_by(R.id.desc()).limit(job.pause_after_failures)))
    reason = auto_pause_reason(statuses, job.pause_after_failures)
    if reason is None:
        return False
    paused = conn.execute(
        update(jobs_table)
        .where(J.id == job.id, J.enabled.is_(True))
        .values(enabled=False, paused_reason=reason, updated_at=now, version=J.version + 1)
    )
    if paused.rowcount != 1:
        return False
    # The audit trail (issue 14): tickwork's own pause, committed with the pause itself.
    record_auto_pause(conn, job_id=job.id, reason=reason, details={"runId": run_id})
    job = _job(conn, job.id)
    record_notifications(conn, Event.JOB_PAUSED, job, run_document(run), notify_url=notify_url, now=now)
    return True


# -- late fires ---------------------------------------------------------------------------------


def sweep_late(
    engine: Engine,
    *,
    notify_url: str | None,
    lookback_seconds: float,
    now: datetime | None = None,
    keep_going: Callable[[], bool] = lambda: True,
) -> int:
    """Mark late fires of every enabled job with ``lateAfterSeconds`` and record ``job.late``.

    Returns the number of fires reported late. Run by the leading scheduler only; the
    compare-and-sets (``job_runs.late_at IS NULL``, ``jobs.late_fire_at`` below the fire) keep a
    second sweep (a deposed leader) from reporting a fire twice. Jobs are decided
    :data:`LATE_SWEEP_CHUNK` to a transaction, and ``jobs`` rows are written only when a job
    turns late (the ticker skips a locked ``jobs`` row: the watermark has its own table).
    ``keep_going`` is checked between chunks (the scheduler passes "still leading").
    """
    now = now or utcnow()
    with engine.connect() as conn:
        candidates = list(
            conn.execute(
                select(J.id, J.late_after_seconds, J.next_fire_at, J.late_fire_at, W.checked_until)
                .select_from(jobs_table.outerjoin(watermarks_table, W.job_id == J.id))
                .where(J.late_after_seconds.is_not(None), J.enabled.is_(True))
                .order_by(J.id)
            )
        )
    # Only jobs with something to decide (a minute job: once a minute).
    due = [row.id for row in candidates if _has_undecided_fires(row, now)]
    reported = 0
    for index in range(0, len(due), LATE_SWEEP_CHUNK):
        if not keep_going():
            break
        with engine.begin() as conn:
            reported += _sweep_chunk(
                conn,
                due[index : index + LATE_SWEEP_CHUNK],
                notify_url=notify_url,
                lookback=lookback_seconds,
                now=now,
            )
    return reported


def _window_end(row: Any, now: datetime) -> datetime:
    """Fires before this are decided now: their deadline passed, and (below ``next_fire_at``,
    read in the same snapshot as the rows) their row exists if they were made."""
    decided_until = now - timedelta(seconds=int(row.late_after_seconds))
    return decided_until if row.next_fire_at is None else min(decided_until, row.next_fire_at)


def _missing_fire(row: Any, now: datetime) -> bool:
    """The next fire is past its deadline and was never made (nor reported yet)."""
    decided_until = now - timedelta(seconds=int(row.late_after_seconds))
    return (
        row.next_fire_at is not None
        and row.next_fire_at < decided_until
        and (row.late_fire_at is None or row.late_fire_at < row.next_fire_at)
    )


def _has_undecided_fires(row: Any, now: datetime) -> bool:
    return _missing_fire(row, now) or row.checked_until is None or row.checked_until < _window_end(row, now)


def _sweep_chunk(
    conn: Connection, job_ids: list[int], *, notify_url: str | None, lookback: float, now: datetime
) -> int:
    # The jobs are read first: a job's next_fire_at and its fire rows are advanced in one
    # transaction, so a fire below next_fire_at in this snapshot has its row, one at it has none.
    jobs = {
        row.id: row
        for row in conn.execute(
            select(jobs_table, W.checked_until)
            .select_from(jobs_table.outerjoin(watermarks_table, W.job_id == J.id))
            .where(J.id.in_(job_ids))
        )
    }
    reported = 0
    windows: dict[int, tuple[datetime, datetime]] = {}
    suppressed: dict[int, datetime | None] = {}
    turned_late: set[int] = set()
    for job in jobs.values():
        if not job.enabled or not job.late_after_seconds:
            continue
        suppressed[job.id] = job.late_fire_at
        if _missing_fire(job, now):
            # No fire was made at all (every scheduler down, or this one only just back).
            marked = conn.execute(
                update(jobs_table)
                .where(J.id == job.id, or_(J.late_fire_at.is_(None), J.late_fire_at < job.next_fire_at))
                .values(late_fire_at=job.next_fire_at, late_since=func.coalesce(J.late_since, now))
            )
            if marked.rowcount == 1:
                document = missing_fire_document(job.next_fire_at)
                record_notifications(conn, Event.JOB_LATE, job, document, notify_url=notify_url, now=now)
                reported += 1
                suppressed[job.id] = job.next_fire_at
                turned_late.add(job.id)
        lookback_start = now - timedelta(seconds=int(job.late_after_seconds) + lookback)
        start, end = job.checked_until or lookback_start, _window_end(job, now)
        if end > start:
            windows[job.id] = (start, end)
    if not windows:
        return reported
    in_windows = or_(
        *(
            and_(R.job_id == job_id, R.scheduled_for >= start, R.scheduled_for < end)
            for job_id, (start, end) in windows.items()
        )
    )
    fires = list(
        conn.execute(
            select(R.id, R.job_id, R.scheduled_for)
            .where(
                in_windows,
                R.attempt == 1,
                R.late_at.is_(None),
                R.trigger != RunTrigger.MANUAL.value,
                # Skipped by the overlap policy: deliberate (the fire before it is the late one).
                # Skipped by the misfire policy: missed while no scheduler ran, so late.
                or_(R.status != RunStatus.SKIPPED.value, R.trigger == RunTrigger.MISFIRE.value),
            )
            .order_by(R.job_id, R.scheduled_for)
            .limit(LATE_SCAN_LIMIT)
        )
    )
    successes: dict[tuple[int, datetime], datetime | None] = {}
    if fires:
        rows = conn.execute(
            select(R.job_id, R.scheduled_for, func.min(R.finished_at))
            .where(in_windows, R.status == RunStatus.SUCCESS.value)
            .group_by(R.job_id, R.scheduled_for)
        )
        successes = {(job_id, _aware(fire)): _aware(done) for job_id, fire, done in rows}  # type: ignore[misc]
    late = [
        fire
        for fire in fires
        if fire_is_late(
            scheduled_for=_aware(fire.scheduled_for),  # type: ignore[arg-type]
            late_after_seconds=int(jobs[fire.job_id].late_after_seconds),
            succeeded_at=successes.get((fire.job_id, _aware(fire.scheduled_for))),  # type: ignore[arg-type]
            now=now,
        )
    ]
    ours: dict[int, Any] = {}
    if late:
        # Compare-and-set of the lot: the rows still unmarked, locked (a racing sweep waits, then
        # finds them marked), are this sweep's to mark and report.
        locked = list(
            conn.scalars(
                select(R.id)
                .where(R.id.in_(sorted(f.id for f in late)), R.late_at.is_(None))
                .order_by(R.id)
                .with_for_update()
            )
        )
        if locked:
            conn.execute(update(runs_table).where(R.id.in_(locked)).values(late_at=now))
            ours = {row.id: row for row in conn.execute(select(runs_table).where(R.id.in_(locked)))}
    outbox: list[dict[str, Any]] = []
    for fire in late:
        if fire.id not in ours:
            continue  # another sweep decided it
        job = jobs[fire.job_id]
        scheduled_for = _aware(fire.scheduled_for)
        last = suppressed.get(job.id)
        if last is not None and scheduled_for is not None and scheduled_for <= last:
            continue  # reported already as a missing fire, before its row was written
        if job.late_since is None and job.id not in turned_late:
            # The job turns late: the only ``jobs`` write of a late fire (the row stays unlocked
            # for the ticker while the job keeps being late).
            conn.execute(
                update(jobs_table).where(J.id == job.id, J.late_since.is_(None)).values(late_since=now)
            )
            turned_late.add(job.id)
        document = run_document(ours[fire.id])
        outbox += notification_rows(Event.JOB_LATE, job, document, notify_url=notify_url, now=now)
        reported += 1
    if outbox:
        conn.execute(insert(notifications_table), outbox)
    # Advance the watermarks (their own table). A scan cut by the limit stops at its last fire.
    marks: dict[int, datetime] = {job_id: end for job_id, (_start, end) in windows.items()}
    if len(fires) >= LATE_SCAN_LIMIT:
        last_fire = fires[-1]
        for job_id in windows:
            if job_id > last_fire.job_id:
                del marks[job_id]
        last_at = _aware(last_fire.scheduled_for)
        assert last_at is not None
        marks[last_fire.job_id] = last_at
    existing = [job_id for job_id in marks if jobs[job_id].checked_until is not None]
    if existing:
        conn.execute(
            update(watermarks_table)
            .where(W.job_id == bindparam("jid"), W.checked_until < bindparam("until"))
            .values(checked_until=bindparam("until")),
            [{"jid": job_id, "until": marks[job_id]} for job_id in existing],
        )
    for job_id in (j for j in marks if jobs[j].checked_until is None):
        try:
            with conn.begin_nested():
                conn.execute(insert(watermarks_table).values(job_id=job_id, checked_until=marks[job_id]))
        except IntegrityError:
            pass  # another sweep made it at the same moment: the next sweep moves it
    return reported


# -- recovery -----------------------------------------------------------------------------------


def sweep_recovered(engine: Engine, *, notify_url: str | None, now: datetime | None = None) -> int:
    """Jobs that were late or failing and have succeeded since (on time, if late): clear both
    and record ``job.recovered`` (compare-and-set on the two instants read)."""
    now = now or utcnow()
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                select(J.id, J.late_since, J.failing_since, J.late_after_seconds)
                .where(or_(J.late_since.is_not(None), J.failing_since.is_not(None)))
                .order_by(J.id)
                .limit(RECOVERY_SCAN_LIMIT)
            )
        )
    recovered = 0
    for row in rows:
        since = max(t for t in (row.late_since, row.failing_since) if t is not None)
        with engine.begin() as conn:
            successes = conn.execute(
                select(R.id, R.scheduled_for, R.finished_at)
                .where(R.job_id == row.id, R.status == RunStatus.SUCCESS.value, R.finished_at > since)
                .order_by(R.id)
                .limit(RECOVERY_SUCCESS_LIMIT)
            )
            success = next(
                (
                    s
                    for s in successes
                    if success_recovers(
                        finished_at=s.finished_at,
                        scheduled_for=s.scheduled_for,
                        since=since,
                        late=row.late_since is not None,
                        late_after_seconds=row.late_after_seconds,
                    )
                ),
                None,
            )
            if success is None:
                continue
            cleared = conn.execute(
                update(jobs_table)
                .where(
                    J.id == row.id,
                    J.late_since.is_not_distinct_from(row.late_since),
                    J.failing_since.is_not_distinct_from(row.failing_since),
                )
                .values(late_since=None, failing_since=None)
            )
            if cleared.rowcount != 1:
                continue
            job = _job(conn, row.id)
            record_notifications(
                conn,
                Event.JOB_RECOVERED,
                job,
                run_document(_run(conn, success.id)),
                notify_url=notify_url,
                now=now,
            )
            recovered += 1
    return recovered


# -- the outbox ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    id: int
    event: str
    target: str
    payload: str
    attempts: int
    created_at: datetime


def due_notifications(engine: Engine, *, now: datetime | None = None, limit: int = 100) -> list[Due]:
    """PENDING notifications whose next attempt is due, oldest first."""
    now = now or utcnow()
    with engine.connect() as conn:
        rows = conn.execute(
            select(N.id, N.event, N.target, N.payload, N.attempts, N.created_at)
            .where(N.status == NotificationStatus.PENDING.value, N.next_attempt_at <= now)
            .order_by(N.next_attempt_at, N.id)
            .limit(limit)
        )
        return [Due(r.id, r.event, r.target, r.payload, r.attempts, r.created_at) for r in rows]


def settle_delivery(
    engine: Engine,
    notification_id: int,
    *,
    seen_attempts: int,
    status: NotificationStatus,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
    now: datetime | None = None,
) -> bool:
    """Record one delivery attempt (compare-and-set on the attempts seen: one settler wins)."""
    now = now or utcnow()
    values: dict[str, Any] = {
        "status": status.value,
        "attempts": seen_attempts + 1,
        "last_error": error,
        "updated_at": now,
    }
    if status == NotificationStatus.DELIVERED:
        values["delivered_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    with engine.begin() as conn:
        result = conn.execute(
            update(notifications_table)
            .where(
                N.id == notification_id,
                N.status == NotificationStatus.PENDING.value,
                N.attempts == seen_attempts,
            )
            .values(**values)
        )
        return bool(result.rowcount == 1)


def list_notifications(
    engine: Engine,
    *,
    status: str | None = None,
    event: str | None = None,
    job_id: int | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[Any]:
    """Newest first; ``before_id`` pages back."""
    query = select(notifications_table)
    if status:
        query = query.where(N.status == status)
    if event:
        query = query.where(N.event == event)
    if job_id is not None:
        query = query.where(N.job_id == job_id)
    if before_id is not None:
        query = query.where(N.id < before_id)
    with engine.connect() as conn:
        return list(conn.execute(query.order_by(N.id.desc()).limit(limit)))


def prune_notifications(engine: Engine, *, older_than: datetime, batch_size: int = 1000) -> int:
    """Delete DELIVERED and FAILED notifications recorded before ``older_than`` (retention)."""
    return delete_in_batches(
        engine,
        notifications_table,
        N.created_at < older_than,
        N.status != NotificationStatus.PENDING.value,
        batch_size=batch_size,
    )


def notification_counts(engine: Engine) -> dict[tuple[str, str], int]:
    """Notifications by (event, status), for ``tickwork_notifications_total``."""
    with engine.connect() as conn:
        rows = conn.execute(select(N.event, N.status, func.count()).group_by(N.event, N.status))
        return {(str(e), str(s)): int(n) for e, s, n in rows}
