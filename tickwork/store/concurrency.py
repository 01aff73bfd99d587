"""The claim of an attempt whose job has ``maxConcurrency``: decided in the database.

Jobs without a limit (``max_concurrency`` NULL, the common case) never come here: their claim
stays the group-committed compare-and-set of :mod:`tickwork.store.recorder`, with no extra query.

A limited job's claim is one transaction:

1. ``SELECT max_concurrency FROM jobs WHERE id = :job FOR UPDATE``: the job's row lock
   serializes the claims of this job across every worker process and machine, so two workers
   can never both see the last free slot;
2. count the job's ``RUNNING`` attempts (on ``ix_job_runs_status_enqueued``: RUNNING rows are
   few, at most the cluster's worker threads; no index was added to the hot ``job_runs``);
3. if a slot is free, the usual ``PENDING → RUNNING`` compare-and-set.

The lock is held only for those three statements. On SQLite (one process, the embedded mode)
``FOR UPDATE`` does not exist; a process-wide lock serializes the claims instead.
"""

from __future__ import annotations

import enum
import threading
from datetime import datetime

from sqlalchemy import Engine, func, select

from tickwork.store.models import RunStatus, jobs_table, runs_table, utcnow
from tickwork.store.runs import claim_attempt

_sqlite_lock = threading.Lock()


class Claim(enum.Enum):
    CLAIMED = "claimed"
    #: Someone else has (or had) the attempt: skip the message.
    TAKEN = "taken"
    #: The job already has ``max_concurrency`` attempts RUNNING: the attempt waits (stays PENDING).
    FULL = "full"


def claim_within_limit(
    engine: Engine,
    run_id: int,
    worker_id: str,
    *,
    job_id: int,
    message_id: str | None = None,
    now: datetime | None = None,
) -> Claim:
    """Claim ``run_id`` for ``worker_id`` if ``job_id`` has fewer RUNNING attempts than its
    current ``max_concurrency`` (read under the job's row lock; NULL by now means unlimited)."""
    if engine.dialect.name == "sqlite":
        with _sqlite_lock:
            return _claim(engine, run_id, worker_id, job_id=job_id, message_id=message_id, now=now)
    return _claim(engine, run_id, worker_id, job_id=job_id, message_id=message_id, now=now)


def _claim(
    engine: Engine, run_id: int, worker_id: str, *, job_id: int, message_id: str | None, now: datetime | None
) -> Claim:
    j, r = jobs_table.c, runs_table.c
    with engine.begin() as conn:
        limit = conn.scalar(select(j.max_concurrency).where(j.id == job_id).with_for_update())
        if limit is not None:
            running = conn.scalar(
                select(func.count())
                .select_from(runs_table)
                .where(r.status == RunStatus.RUNNING.value, r.job_id == job_id)
            )
            if int(running or 0) >= int(limit):
                return Claim.FULL
        claimed = claim_attempt(conn, run_id, worker_id, message_id=message_id, now=now or utcnow())
    return Claim.CLAIMED if claimed else Claim.TAKEN
