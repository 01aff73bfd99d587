"""Queries on ``trigger_keys``: the ``Idempotency-Key`` of a trigger and the run it made."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from tickwork.store.engine import delete_in_batches
from tickwork.store.models import RunTrigger, trigger_keys_table
from tickwork.store.runs import insert_run

#: How long an ``Idempotency-Key`` answers the run it made.
WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class TriggerKeyRow:
    id: int
    run_id: int
    request_hash: str
    created_at: datetime


def find(conn: Connection, job_id: int, key: str) -> TriggerKeyRow | None:
    """The key's row for this job (however old), or None."""
    c = trigger_keys_table.c
    row = conn.execute(
        select(c.id, c.run_id, c.request_hash, c.created_at).where(c.job_id == job_id, c.key == key)
    ).first()
    if row is None:
        return None
    return TriggerKeyRow(
        id=int(row.id), run_id=int(row.run_id), request_hash=row.request_hash, created_at=row.created_at
    )


def forget(conn: Connection, row_id: int) -> None:
    """Drop an expired key so that it can name a new run."""
    conn.execute(delete(trigger_keys_table).where(trigger_keys_table.c.id == row_id))


def remember(
    conn: Connection, *, job_id: int, key: str, request_hash: str, run_id: int, now: datetime
) -> None:
    """Record the key; a concurrent request that recorded it first makes this an ``IntegrityError``
    (``UNIQUE(job_id, key)``), and its transaction (with its run) is rolled back."""
    conn.execute(
        insert(trigger_keys_table).values(
            job_id=job_id, key=key, request_hash=request_hash, run_id=run_id, created_at=now
        )
    )


@dataclass(frozen=True)
class KeyedRun:
    """The run a key names: made by this call (``created``), or by the first request with the
    key, whose body had ``request_hash``."""

    run_id: int
    created: bool
    request_hash: str


def run_once(
    engine: Engine,
    *,
    job_id: int,
    key: str,
    request_hash: str,
    arguments: dict[str, Any] | None,
    now: datetime,
) -> KeyedRun | None:
    """The run ``key`` made of this job within :data:`WINDOW`, else a new PENDING manual run.

    The key and the new run are written in one transaction, so two requests racing with one key
    make one run: the second one's insert of the key fails (``UNIQUE(job_id, key)``) and its run
    is rolled back with it. That one gets None: call again, and it finds the first one's run.
    """
    try:
        with engine.begin() as conn:
            known = find(conn, job_id, key)
            if known is not None and known.created_at > now - WINDOW:
                return KeyedRun(run_id=known.run_id, created=False, request_hash=known.request_hash)
            if known is not None:
                forget(conn, known.id)
            run_id = insert_run(
                conn,
                job_id=job_id,
                scheduled_for=now,
                trigger=RunTrigger.MANUAL,
                arguments=arguments,
                now=now,
            )
            remember(conn, job_id=job_id, key=key, request_hash=request_hash, run_id=run_id, now=now)
    except IntegrityError:
        return None
    return KeyedRun(run_id=run_id, created=True, request_hash=request_hash)


def prune(engine: Engine, *, older_than: datetime, batch_size: int = 1000) -> int:
    """Delete keys recorded before ``older_than`` (they no longer deduplicate anything)."""
    c = trigger_keys_table.c
    return delete_in_batches(engine, trigger_keys_table, c.created_at < older_than, batch_size=batch_size)
