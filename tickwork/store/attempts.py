"""Queries the worker runtime needs beyond ``runs.py``: retries, dead letters, reaping.

The hot path (claim, finish) lives in :mod:`tickwork.store.recorder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, select, update

from tickwork.errors import Conflict, NotFound
from tickwork.store.engine import session_factory
from tickwork.store.models import JobRun, RunStatus, RunTrigger, runs_table, utcnow
from tickwork.store.runs import finish_attempt, get_run, insert_run


def finish_and_retry(
    engine: Engine,
    run_id: int,
    worker_id: str,
    *,
    job_id: int,
    scheduled_for: datetime,
    next_attempt: int,
    available_at: datetime,
    arguments: dict[str, Any] | None,
    output: str | None,
    error: str | None,
    traceback: str | None,
    http_status: int | None = None,
) -> int | None:
    """Attempt n FAILED and attempt n+1 PENDING in one transaction; None if n was not ours to fail.

    The compare-and-set matches ``worker_id``: the worker itself, or the reaper failing the
    attempt of a lost worker in its name.
    """
    now = utcnow()
    with engine.begin() as conn:
        if not finish_attempt(
            conn,
            run_id,
            worker_id,
            status=RunStatus.FAILED,
            output=output,
            error=error,
            traceback=traceback,
            http_status=http_status,
            now=now,
        ):
            return None
        return insert_run(
            conn,
            job_id=job_id,
            scheduled_for=scheduled_for,
            attempt=next_attempt,
            trigger=RunTrigger.RETRY,
            available_at=available_at,
            arguments=arguments,
            now=now,
        )


@dataclass(frozen=True)
class RunningAttempt:
    id: int
    job_id: int
    worker_id: str
    attempt: int
    scheduled_for: datetime
    arguments: dict[str, Any] | None
    started_at: datetime | None


def running_workers(engine: Engine) -> list[str | None]:
    """The workers holding RUNNING attempts (the reaper checks each one's heartbeat once)."""
    c = runs_table.c
    with engine.connect() as conn:
        return list(conn.scalars(select(c.worker_id).where(c.status == RunStatus.RUNNING.value).distinct()))


def running_attempts(
    engine: Engine,
    *,
    worker_id: str | None = None,
    any_worker: bool = True,
    started_before: datetime | None = None,
    limit: int = 1000,
) -> list[RunningAttempt]:
    """RUNNING attempts, oldest first: all of them, or (``any_worker=False``) ``worker_id``'s."""
    c = runs_table.c
    query = select(c.id, c.job_id, c.worker_id, c.attempt, c.scheduled_for, c.arguments, c.started_at).where(
        c.status == RunStatus.RUNNING.value
    )
    if not any_worker:
        query = query.where(c.worker_id.is_(None) if worker_id is None else c.worker_id == worker_id)
    if started_before is not None:
        query = query.where(c.started_at < started_before)
    query = query.order_by(c.id).limit(limit)
    with engine.connect() as conn:
        return [
            RunningAttempt(
                id=row.id,
                job_id=row.job_id,
                worker_id=row.worker_id or "",
                attempt=row.attempt,
                scheduled_for=row.scheduled_for,
                arguments=row.arguments,
                started_at=row.started_at,
            )
            for row in conn.execute(query)
        ]


def list_dead_runs(
    engine: Engine, *, job_id: int | None = None, limit: int = 50, before_id: int | None = None
) -> list[JobRun]:
    query = select(JobRun).where(JobRun.status == RunStatus.DEAD.value)
    if job_id is not None:
        query = query.where(JobRun.job_id == job_id)
    if before_id is not None:
        query = query.where(JobRun.id < before_id)
    with session_factory(engine)() as session:
        return list(session.scalars(query.order_by(JobRun.id.desc()).limit(limit)))


def replay_dead_run(engine: Engine, run_id: int) -> tuple[JobRun, int, int]:
    """DEAD → REPLAYED and a new PENDING attempt (max + 1), in one transaction.

    Returns the dead row, the new run id and its attempt number. A run that is not DEAD raises
    :class:`Conflict`; a missing one :class:`NotFound`.
    """
    now = utcnow()
    c = runs_table.c
    with engine.begin() as conn:
        row = conn.execute(select(runs_table).where(c.id == run_id)).first()
        if row is None:
            raise NotFound(f"run {run_id} not found")
        changed = conn.execute(
            update(runs_table)
            .where(and_(c.id == run_id, c.status == RunStatus.DEAD.value))
            .values(status=RunStatus.REPLAYED.value, updated_at=now)
        )
        if changed.rowcount != 1:
            raise Conflict(f"run {run_id} is {row.status}, not DEAD: only dead runs can be replayed")
        last = conn.scalar(
            select(func.max(c.attempt)).where(
                and_(c.job_id == row.job_id, c.scheduled_for == row.scheduled_for)
            )
        )
        attempt = int(last or row.attempt) + 1
        new_id = insert_run(
            conn,
            job_id=row.job_id,
            scheduled_for=row.scheduled_for,
            attempt=attempt,
            trigger=RunTrigger.REPLAY,
            arguments=row.arguments,
            now=now,
        )
    return get_run(engine, run_id), new_id, attempt


def discard_dead_runs(engine: Engine, run_ids: list[int] | None = None) -> list[int]:
    """DEAD → DISCARDED for ``run_ids`` (all dead runs when None); returns the ids changed.

    Named runs are all or nothing, as a replay is: one that does not exist raises
    :class:`NotFound`, one that is not DEAD :class:`Conflict` (naming each), and nothing changes.
    """
    now = utcnow()
    c = runs_table.c
    with engine.begin() as conn:
        if run_ids is None:
            query = select(c.id).where(c.status == RunStatus.DEAD.value)
            ids = [int(i) for i in conn.scalars(query.with_for_update())]
        else:
            ids = list(dict.fromkeys(run_ids))
            found = {
                int(row.id): str(row.status)
                for row in conn.execute(select(c.id, c.status).where(c.id.in_(ids)).with_for_update())
            }
            missing = [str(i) for i in ids if i not in found]
            alive = [f"run {i} is {found[i]}, not DEAD" for i in ids if i in found and found[i] != "DEAD"]
            if missing or alive:
                problems = ([f"run(s) {', '.join(missing)} not found"] if missing else []) + alive
                error = NotFound if not alive else Conflict
                raise error(f"{'; '.join(problems)} (nothing discarded)")
        if ids:
            conn.execute(
                update(runs_table)
                .where(and_(c.id.in_(ids), c.status == RunStatus.DEAD.value))
                .values(status=RunStatus.DISCARDED.value, updated_at=now)
            )
    return ids
