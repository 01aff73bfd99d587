"""Writing a backfill's fires: PENDING rows with trigger ``backfill``, paced by ``available_at``.

A backfill's rows are the outbox like any other fire's: the scheduler's outbox sweep publishes a
never-published PENDING row once its ``available_at`` has passed. Spreading ``available_at``
over time at a fixed rate is the pacing: the rows are all committed at once (nothing is lost
if the API process dies), but they reach the broker a slice at a time, so on-time fires are
never queued behind thousands of backfilled ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from tickwork.store.models import RunStatus, RunTrigger, runs_table, utcnow

#: Rows inserted per transaction: short transactions keep the ticker's row locks uncontended.
INSERT_CHUNK = 500


def existing_fires(engine: Engine, job_id: int, start: datetime, end: datetime) -> set[datetime]:
    """The ``scheduled_for`` of every fire of ``job_id`` in ``[start, end)`` (any attempt, any status)."""
    c = runs_table.c
    with engine.connect() as conn:
        return set(
            conn.scalars(
                select(c.scheduled_for)
                .where(c.job_id == job_id, c.scheduled_for >= start, c.scheduled_for < end)
                .distinct()
            )
        )


def insert_backfill(
    engine: Engine, job_id: int, fires: list[datetime], *, per_second: float, now: datetime | None = None
) -> tuple[int, int]:
    """Insert one PENDING attempt-1 row per fire; returns (inserted, skipped as already existing).

    Fire ``i`` becomes due ``i / per_second`` seconds after ``now``. A fire that appeared
    meanwhile (the ticker made it, or another backfill) makes its chunk's insert fail on
    ``UNIQUE(job_id, scheduled_for, attempt)``; the chunk is then written again without the
    fires that exist by then, so no fire is ever written twice.
    """
    now = now or utcnow()
    inserted = skipped = 0
    for offset in range(0, len(fires), INSERT_CHUNK):
        chunk = fires[offset : offset + INSERT_CHUNK]
        rows = [
            {
                "job_id": job_id,
                "scheduled_for": fire,
                "attempt": 1,
                "status": RunStatus.PENDING.value,
                "trigger": RunTrigger.BACKFILL.value,
                "available_at": now + timedelta(seconds=(offset + i) / per_second),
                "created_at": now,
                "updated_at": now,
            }
            for i, fire in enumerate(chunk)
        ]
        for _ in range(5):
            try:
                with engine.begin() as conn:
                    if rows:
                        conn.execute(insert(runs_table), rows)
                break
            except IntegrityError:
                present = existing_fires(engine, job_id, chunk[0], chunk[-1] + timedelta(microseconds=1))
                rows = [r for r in rows if r["scheduled_for"] not in present]
        else:
            raise RuntimeError(f"backfill of job {job_id}: fires kept appearing while inserting")
        inserted += len(rows)
        skipped += len(chunk) - len(rows)
    return inserted, skipped
