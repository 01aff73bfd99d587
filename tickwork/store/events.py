"""Queries on ``events``: the audit trail, one row per change to a job or a run.

Who changed what and when: ``actor`` is a token's ``sub`` (with its ``role``), or ``cli``,
``decorator`` (a ``@job`` registering its definition) or ``tickwork`` (tickwork itself, e.g. an
automatic pause). Definition changes carry the changed fields' values before and after in
``details["changes"]``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic.alias_generators import to_camel
from sqlalchemy import Connection, Engine, insert, select

from tickwork.spec import JobSpec
from tickwork.store.engine import delete_in_batches, session_factory
from tickwork.store.models import Event, events_table, runs_table, utcnow

Executor = Engine | Connection


class EventKind(enum.StrEnum):
    JOB_CREATED = "job.created"
    JOB_UPDATED = "job.updated"
    JOB_DELETED = "job.deleted"
    JOB_PAUSED = "job.paused"
    JOB_RESUMED = "job.resumed"
    JOB_TRIGGERED = "job.triggered"
    JOB_BACKFILLED = "job.backfilled"
    RUN_REPLAYED = "run.replayed"
    RUN_PURGED = "run.purged"


@dataclass(frozen=True)
class Actor:
    """Who made a change: ``name`` is a token's ``sub`` or one of :data:`CLI`, :data:`DECORATOR`,
    :data:`TICKWORK`; ``role`` the token's role (None for the others)."""

    name: str
    role: str | None = None


CLI = Actor("cli")
DECORATOR = Actor("decorator")
#: tickwork itself (an automatic pause after repeated failures).
TICKWORK = Actor("tickwork")


def record(
    target: Executor,
    *,
    actor: Actor,
    kind: EventKind | str,
    job_id: int | None = None,
    run_id: int | None = None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> int:
    """Write one event (in ``target``'s transaction when it is a connection); its id."""
    statement = insert(events_table).values(
        created_at=now or utcnow(),
        actor=actor.name,
        role=actor.role,
        kind=str(kind),
        job_id=job_id,
        run_id=run_id,
        details=details,
    )
    if isinstance(target, Engine):
        with target.begin() as conn:
            result = conn.execute(statement)
    else:
        result = target.execute(statement)
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def record_per_run(engine: Engine, *, actor: Actor, kind: EventKind | str, run_ids: list[int]) -> None:
    """One event per run, each naming the run's job (None for a run already gone), in one
    transaction."""
    c = runs_table.c
    with engine.begin() as conn:
        owners = {
            int(r.id): int(r.job_id) for r in conn.execute(select(c.id, c.job_id).where(c.id.in_(run_ids)))
        }
        for run_id in run_ids:
            record(conn, actor=actor, kind=kind, job_id=owners.get(run_id), run_id=run_id)


def record_auto_pause(
    target: Executor, *, job_id: int, reason: str, details: dict[str, Any] | None = None
) -> int:
    """The ``job.paused`` event of tickwork pausing a job itself (e.g. after repeated failures):
    actor ``tickwork``, no role, ``details.reason``. Pass the connection of the transaction that
    pauses the job, so the event and the pause commit together."""
    return record(
        target,
        actor=TICKWORK,
        kind=EventKind.JOB_PAUSED,
        job_id=job_id,
        details={
            "reason": reason,
            "changes": {"enabled": {"before": True, "after": False}},
            **(details or {}),
        },
    )


def list_events(
    engine: Engine,
    *,
    job_id: int | None = None,
    kinds: list[str] | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Event]:
    """Events newest first; keyset paging on ``id`` (``before_id``), on ``(job_id, id)`` or
    ``(kind, id)`` indexes when filtered."""
    query = select(Event)
    if job_id is not None:
        query = query.where(Event.job_id == job_id)
    if kinds:
        query = query.where(Event.kind.in_(kinds))
    if before_id is not None:
        query = query.where(Event.id < before_id)
    with session_factory(engine)() as session:
        return list(session.scalars(query.order_by(Event.id.desc()).limit(limit)))


def prune(engine: Engine, *, older_than: datetime, batch_size: int = 1000) -> int:
    """Delete events recorded before ``older_than`` (the runs' retention), in small batches."""
    return delete_in_batches(
        engine, events_table, events_table.c.created_at < older_than, batch_size=batch_size
    )


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{field: {"before", "after"}}`` for the fields whose values differ."""
    return {
        name: {"before": before.get(name), "after": after.get(name)}
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


def job_definition(job: Any) -> dict[str, Any]:
    """A job's definition as the API writes it (camelCase, JSON values): what an event compares."""
    values: dict[str, Any] = {}
    for name in JobSpec.model_fields:
        value = getattr(job, name, None)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, enum.Enum):
            value = value.value
        if name == "tags" and value is None:
            value = []
        values[to_camel(name)] = value
    return values
