"""Fires: the scheduler's SQL. Claim due jobs, advance them, write the attempt rows (the outbox).

:func:`fire_due_jobs` does one tick's work in ONE transaction:

1. ``SELECT … FOR UPDATE SKIP LOCKED`` the enabled jobs whose ``next_fire_at <= now``
   (plain ``SELECT`` on SQLite, which has one writer anyway);
2. plan each job's fires (:mod:`tickwork.schedule.policy`: misfire, overlap, one-time);
3. advance ``next_fire_at`` with compare-and-set on its old value and the job's ``version``;
4. insert one row per fire: ``PENDING`` (to publish), or ``MISSED`` / ``SKIPPED``.

It returns the ``PENDING`` attempts; the caller publishes them after the commit and then calls
:func:`~tickwork.store.runs.mark_enqueued`. Two tickers running at once (a paused leader whose
lease expired) cannot both fire a time: row locks and the CAS decide who advances a job, and
``UNIQUE(job_id, scheduled_for, attempt)`` refuses a second row whatever happens.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from tickwork.schedule.policy import FirePlan, apply_overlap, plan_fires
from tickwork.store.engine import delete_in_batches, retry_transient
from tickwork.store.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    JOB_SNAPSHOT_COLUMNS,
    JobSnapshot,
    OverlapPolicy,
    RunStatus,
    RunTrigger,
    jobs_table,
    runs_table,
    utcnow,
)

logger = logging.getLogger(__name__)

#: Jobs claimed per transaction; a bigger due set takes several transactions in one tick.
DEFAULT_CLAIM_LIMIT = 1000

#: The ``jobs`` columns a fire reads (see :class:`~tickwork.store.models.JobSnapshot`).
_JOB_COLUMNS = JOB_SNAPSHOT_COLUMNS


@dataclass(frozen=True)
class PendingAttempt:
    """A PENDING attempt row to publish, with the job snapshot its message is built from."""

    run_id: int
    job: JobSnapshot
    scheduled_for: datetime
    attempt: int = 1
    arguments: dict[str, Any] | None = None
    #: When it was last published (None: never, e.g. its leader died between commit and publish).
    enqueued_at: datetime | None = None
    #: Why the attempt exists (``schedule``, ``misfire``, ``manual``, ...): a metrics label.
    trigger: str = RunTrigger.SCHEDULE.value


#: The old name of :class:`PendingAttempt`.
Attempt = PendingAttempt


@dataclass
class FireResult:
    """What one call of :func:`fire_due_jobs` did."""

    to_publish: list[PendingAttempt] = field(default_factory=list)
    claimed_jobs: int = 0
    #: Rows written, by status (``PENDING``, ``MISSED``, ``SKIPPED``).
    rows: Counter[str] = field(default_factory=Counter)
    #: Jobs another ticker had advanced first (the CAS refused ours).
    lost_races: int = 0
    #: True when the claim limit was reached: more jobs may be due.
    more: bool = False


class PartialAdvance(Exception):
    """Another ticker advanced some jobs of a group between our read and our write."""


def _job_snapshot(row: Any) -> JobSnapshot:
    return JobSnapshot(*[row[name] for name in _JOB_COLUMNS])


def _claim_due(conn: Connection, now: datetime, limit: int, job_ids: list[int] | None) -> list[Any]:
    query = (
        select(*(jobs_table.c[name] for name in _JOB_COLUMNS))
        .where(jobs_table.c.enabled.is_(True), jobs_table.c.next_fire_at <= now)
        .order_by(jobs_table.c.next_fire_at)
        .limit(limit)
    )
    if job_ids is not None:
        query = query.where(jobs_table.c.id.in_(job_ids))
    if conn.dialect.name == "mysql":
        query = query.with_for_update(skip_locked=True)
    return list(conn.execute(query).mappings())


def _active_jobs(conn: Connection, job_ids: list[int]) -> set[int]:
    if not job_ids:
        return set()
    result = conn.execute(
        select(runs_table.c.job_id)
        .where(
            runs_table.c.status.in_([s.value for s in ACTIVE_STATUSES]),
            runs_table.c.job_id.in_(job_ids),
        )
        .distinct()
    )
    return {int(r[0]) for r in result}


def _advance(conn: Connection, jobs: list[Any], plans: dict[int, FirePlan], now: datetime) -> set[int]:
    """CAS ``next_fire_at`` (old value and version) forward; returns the ids actually advanced.

    Jobs sharing the old and new fire times (every job on ``* * * * * *``) go in one statement.
    """
    groups: dict[tuple[datetime, datetime | None, datetime | None], list[tuple[int, int]]] = defaultdict(list)
    for row in jobs:
        plan = plans[row["id"]]
        key = (row["next_fire_at"], plan.next_fire_at, plan.last_fire_at)
        groups[key].append((row["id"], row["version"]))
    advanced: set[int] = set()
    for (old, new, last), pairs in groups.items():
        # ``version`` is left alone: it counts changes to the definition (the API's ETag), not
        # fires. The CAS on ``next_fire_at`` already refuses a second advance from the same old
        # value, and the one on ``version`` a definition edited since the snapshot.
        values: dict[str, Any] = {"next_fire_at": new, "updated_at": now}
        if last is not None:
            values["last_fire_at"] = last
        if len(pairs) == 1:
            cas = and_(jobs_table.c.id == pairs[0][0], jobs_table.c.version == pairs[0][1])
        else:
            cas = tuple_(jobs_table.c.id, jobs_table.c.version).in_(pairs)
        result = conn.execute(
            update(jobs_table).where(cas, jobs_table.c.next_fire_at == old).values(**values)
        )
        if result.rowcount == len(pairs):
            advanced.update(job_id for job_id, _ in pairs)
        elif len(pairs) > 1:
            # Someone else moved some of them (no row locks, e.g. SQLite): which ones is not
            # knowable from a count, so roll back and let the caller go job by job.
            raise PartialAdvance(f"{len(pairs) - result.rowcount} of {len(pairs)} jobs moved meanwhile")
    return advanced


def fire_due_jobs(
    engine: Engine,
    *,
    now: datetime | None = None,
    default_grace_seconds: float = 60.0,
    fire_all_limit: int = 100,
    limit: int = DEFAULT_CLAIM_LIMIT,
    job_ids: list[int] | None = None,
    until: datetime | None = None,
    skip_existing: bool = False,
) -> FireResult:
    """Make the fires of jobs due by ``until`` (default ``now``) in one transaction.

    Returns the attempts to publish. ``until`` a few ms ahead of ``now`` lets the ticker write
    the rows of an imminent fire early and publish at the fire instant itself. With
    ``skip_existing``, a fire whose attempt-1 row already exists is left as it is (someone made
    it) while the job still advances and its other fires are written.
    """
    now = now or utcnow()
    until = until or now
    result = FireResult()
    with engine.begin() as conn:
        due = _claim_due(conn, until, limit, job_ids)
        result.claimed_jobs = len(due)
        result.more = len(due) >= limit
        if not due:
            return result
        plans: dict[int, FirePlan] = {}
        for row in due:
            grace = row["misfire_grace_seconds"]
            plans[row["id"]] = plan_fires(
                cron_expression=row["cron_expression"],
                timezone=row["timezone"],
                run_at=row["run_at"],
                next_fire_at=row["next_fire_at"],
                now=until,
                misfire_policy=row["misfire_policy"],
                grace_seconds=default_grace_seconds if grace is None else grace,
                fire_all_limit=fire_all_limit,
            )
        advanced = _advance(conn, due, plans, now)
        result.lost_races = len(due) - len(advanced)
        rows = [row for row in due if row["id"] in advanced]

        guarded = [
            r["id"] for r in rows if r["overlap_policy"] != OverlapPolicy.ALLOW.value and plans[r["id"]].fires
        ]
        active = _active_jobs(conn, guarded)
        replaced = [r["id"] for r in rows if r["overlap_policy"] == OverlapPolicy.REPLACE.value]
        params: list[dict[str, Any]] = []
        snapshots: dict[int, JobSnapshot] = {}
        for row in rows:
            fires = apply_overlap(plans[row["id"]].fires, row["overlap_policy"], active=row["id"] in active)
            if row["overlap_policy"] == OverlapPolicy.REPLACE.value and not any(f.runs for f in fires):
                replaced.remove(row["id"])
            for fire in fires:
                final = not fire.runs
                params.append(
                    {
                        "job_id": row["id"],
                        "scheduled_for": fire.scheduled_for,
                        "attempt": 1,
                        "status": fire.status.value,
                        "trigger": fire.trigger.value,
                        "available_at": fire.scheduled_for if final else max(now, fire.scheduled_for),
                        "error": fire.error,
                        "finished_at": now if final else None,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                result.rows[fire.status.value] += 1
            snapshots[row["id"]] = _job_snapshot(row)
        if replaced:
            conn.execute(
                update(runs_table)
                .where(
                    runs_table.c.job_id.in_(replaced),
                    runs_table.c.status == RunStatus.PENDING.value,
                )
                .values(
                    status=RunStatus.SKIPPED.value,
                    error="overlap policy replace: superseded by a newer fire",
                    finished_at=now,
                    updated_at=now,
                )
            )
        if params and skip_existing:
            params = _without_existing(conn, params)
        if params:
            inserted = conn.execute(
                insert(runs_table).returning(
                    runs_table.c.id,
                    runs_table.c.job_id,
                    runs_table.c.scheduled_for,
                    runs_table.c.status,
                    runs_table.c.trigger,
                ),
                params,
            )
            for run_id, job_id, scheduled_for, status, trigger in inserted:
                if status == RunStatus.PENDING.value:
                    result.to_publish.append(
                        PendingAttempt(int(run_id), snapshots[int(job_id)], scheduled_for, trigger=trigger)
                    )
    result.to_publish.sort(key=lambda a: a.scheduled_for)
    return result


def fire_due_jobs_safely(
    engine: Engine,
    *,
    now: datetime | None = None,
    default_grace_seconds: float = 60.0,
    fire_all_limit: int = 100,
    limit: int = DEFAULT_CLAIM_LIMIT,
    until: datetime | None = None,
) -> FireResult:
    """:func:`fire_due_jobs`, and if a row already exists (a fire made by someone else), retry
    one job per transaction so that one conflicting job cannot stall the others.

    Each transaction that InnoDB rolls back as a deadlock victim is run again on its own, so
    the attempts of the transactions that did commit are always returned for publishing.
    """
    try:
        return retry_transient(
            lambda: fire_due_jobs(
                engine,
                now=now,
                default_grace_seconds=default_grace_seconds,
                fire_all_limit=fire_all_limit,
                limit=limit,
                until=until,
            )
        )
    except (IntegrityError, PartialAdvance) as exc:
        logger.warning("firing due jobs one by one: %s", type(exc).__name__)
    now = now or utcnow()
    until = until or now
    total = FireResult()
    with engine.connect() as conn:
        due_ids = [
            int(r[0])
            for r in conn.execute(
                select(jobs_table.c.id)
                .where(jobs_table.c.enabled.is_(True), jobs_table.c.next_fire_at <= until)
                .order_by(jobs_table.c.next_fire_at)
                .limit(limit)
            )
        ]
    for job_id in due_ids:
        try:
            one = retry_transient(
                functools.partial(
                    fire_due_jobs,
                    engine,
                    now=now,
                    default_grace_seconds=default_grace_seconds,
                    fire_all_limit=fire_all_limit,
                    job_ids=[job_id],
                    until=until,
                    skip_existing=True,
                )
            )
        except IntegrityError:
            # Another ticker wrote a row between our check and our insert: its transaction
            # advanced the job too, so the next tick sees where the schedule stands.
            logger.warning("fire of job made concurrently; left to the next tick", extra={"job_id": job_id})
            continue
        total.to_publish.extend(one.to_publish)
        total.rows.update(one.rows)
        total.claimed_jobs += one.claimed_jobs
        total.lost_races += one.lost_races
    total.more = len(due_ids) >= limit
    total.to_publish.sort(key=lambda a: a.scheduled_for)
    return total


def _without_existing(conn: Connection, params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop planned rows whose fire already has an attempt-1 row (recorded by someone else)."""
    job_ids = {p["job_id"] for p in params}
    times = [p["scheduled_for"] for p in params]
    existing = {
        (int(job_id), when)
        for job_id, when in conn.execute(
            select(runs_table.c.job_id, runs_table.c.scheduled_for).where(
                runs_table.c.job_id.in_(job_ids),
                runs_table.c.attempt == 1,
                runs_table.c.scheduled_for.between(min(times), max(times)),
            )
        )
    }
    if existing:
        logger.warning(
            "%d fires were already recorded; writing the other %d",
            len(existing),
            len(params) - len(existing),
            extra={"job_id": sorted(job_ids)[0]},
        )
    return [p for p in params if (p["job_id"], p["scheduled_for"]) not in existing]


def earliest_next_fire(engine: Engine) -> datetime | None:
    """When the ticker must wake next: the earliest ``next_fire_at`` of an enabled job."""
    with engine.connect() as conn:
        value: datetime | None = conn.scalar(
            select(func.min(jobs_table.c.next_fire_at)).where(jobs_table.c.enabled.is_(True))
        )
    return value


def pending_unclaimed(
    engine: Engine,
    *,
    grace_seconds: float,
    unpublished_grace_seconds: float | None = None,
    now: datetime | None = None,
    limit: int = 1000,
) -> list[PendingAttempt]:
    """PENDING attempts no worker claimed within ``grace_seconds`` of being due and published,
    and those never published (``enqueued_at`` NULL: the ticker died between commit and publish)
    ``unpublished_grace_seconds`` after they became due (default: ``grace_seconds``).

    The outbox sweep republishes them (the worker-side claim makes a duplicate message harmless).
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=grace_seconds)
    unpublished_cutoff = now - timedelta(
        seconds=grace_seconds if unpublished_grace_seconds is None else unpublished_grace_seconds
    )
    c = runs_table.c
    columns = (c.id, c.job_id, c.scheduled_for, c.attempt, c.arguments, c.enqueued_at, c.trigger)
    pending = c.status == RunStatus.PENDING.value
    # Two ranges of ix_job_runs_status_enqueued, each read in index order and stopped at the
    # limit (one query ordered by "never published first" read and sorted every stale row).
    # Never-published rows first: a backlog of published ones must not hide them.
    never_published = (
        select(*columns)
        .where(pending, c.enqueued_at.is_(None), c.available_at < unpublished_cutoff)
        .order_by(c.enqueued_at, c.available_at)  # the index's order (enqueued_at all NULL): no sort
        .limit(limit)
    )
    unclaimed = (
        select(*columns)
        .where(pending, c.enqueued_at < cutoff, c.available_at < cutoff)
        .order_by(c.enqueued_at, c.available_at)
    )
    with engine.connect() as conn:
        rows = list(conn.execute(never_published))
        if len(rows) < limit:
            rows += conn.execute(unclaimed.limit(limit - len(rows))).all()
        job_ids = sorted({row.job_id for row in rows})
        jobs: dict[int, JobSnapshot] = {}
        for start in range(0, len(job_ids), 1000):
            for found in conn.execute(
                select(*(jobs_table.c[name] for name in _JOB_COLUMNS)).where(
                    jobs_table.c.id.in_(job_ids[start : start + 1000])
                )
            ).mappings():
                jobs[int(found["id"])] = _job_snapshot(found)
    attempts: list[PendingAttempt] = []
    for row in rows:
        job = jobs.get(int(row.job_id))
        if job is None:
            continue  # deleted since (its runs go with it)
        attempts.append(
            PendingAttempt(
                run_id=int(row.id),
                job=job,
                scheduled_for=row.scheduled_for,
                attempt=int(row.attempt),
                arguments=row.arguments,
                enqueued_at=row.enqueued_at,
                trigger=row.trigger,
            )
        )
    return attempts


def prune_runs(
    engine: Engine,
    *,
    older_than: datetime,
    batch_size: int = 1000,
    max_seconds: float | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> int:
    """Delete finished attempt rows created before ``older_than``, ``batch_size`` per transaction.

    Small batches keep each transaction (and its locks) short on a busy ``job_runs``. It stops
    when nothing old is left, after ``max_seconds``, or when ``keep_going()`` says so (the
    scheduler's lease); the next call continues where this one stopped.
    """
    return delete_in_batches(
        engine,
        runs_table,
        runs_table.c.created_at < older_than,
        runs_table.c.status.in_([s.value for s in FINAL_STATUSES]),
        order_by=runs_table.c.created_at,
        batch_size=batch_size,
        max_seconds=max_seconds,
        keep_going=keep_going,
    )
