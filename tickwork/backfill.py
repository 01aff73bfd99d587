"""Backfill: one fire (trigger ``backfill``) for every time a job's schedule has in ``[start, end)``.

The times come from the same schedule math as on-time fires (:class:`CronSchedule`: the job's
time zone, DST gaps and folds handled alike), fires that already exist for a time are skipped
(``UNIQUE(job_id, scheduled_for, attempt)``), and the rows are paced by
:mod:`tickwork.store.backfill` so that on-time fires are not starved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import CroniterBadDateError
from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.errors import ValidationError
from tickwork.schedule.cron import CronSchedule
from tickwork.store import backfill as backfill_store
from tickwork.store.models import Job, OverlapPolicy, utcnow

#: A range with more fires than the limit is counted up to this many for the error message.
COUNT_CAP = 100_000


@dataclass(frozen=True)
class BackfillResult:
    fires: int
    skipped_existing: int


def schedule_times(job: Job, start: datetime, end: datetime, *, limit: int) -> list[datetime]:
    """The job's fire instants in ``[start, end)``; more than ``limit`` is a :class:`ValidationError`
    saying how many (counted up to :data:`COUNT_CAP`)."""
    if job.cron_expression:
        times: list[datetime] = []
        iterator = CronSchedule(job.cron_expression, job.timezone).iter_fires(
            start - timedelta(microseconds=1)
        )
        count = 0
        try:
            for instant in iterator:
                if instant >= end:
                    break
                count += 1
                if count <= limit:
                    times.append(instant)
                elif count > COUNT_CAP:
                    break
        except (CroniterBadDateError, OverflowError, ValueError):
            pass  # past the end of the calendar: no more fires
        if count > limit:
            how_many = f"more than {COUNT_CAP:,}" if count > COUNT_CAP else f"{count:,}"
            raise ValidationError(
                "end",
                f"the range has {how_many} fires, more than TICKWORK_BACKFILL_MAX_FIRES ({limit:,}): "
                "backfill it in smaller ranges",
            )
        return times
    if job.run_at is not None and start <= job.run_at < end:
        return [job.run_at]
    return []


def check_range(start: datetime, end: datetime, now: datetime) -> None:
    if end <= start:
        raise ValidationError("end", "must be later than start")
    if end > now:
        raise ValidationError(
            "end",
            "must not be later than now: future fires are the scheduler's (end is exclusive; now is "
            f"{now.isoformat(timespec='seconds')})",
        )


def backfill(settings: Settings, engine: Engine, job: Job, start: datetime, end: datetime) -> BackfillResult:
    """Write the fires of ``[start, end)`` that do not exist yet, paced at
    ``settings.backfill_fires_per_second``; the scheduler's outbox sweep publishes them as they
    become due."""
    now = utcnow()
    check_range(start, end, now)
    if job.overlap_policy == OverlapPolicy.REPLACE.value:
        raise ValidationError(
            "overlapPolicy",
            "a job with overlapPolicy replace would supersede its backfilled fires at its next fire; "
            "change the policy first",
        )
    times = schedule_times(job, start, end, limit=settings.backfill_max_fires)
    present = backfill_store.existing_fires(engine, job.id, start, end) if times else set()
    new = [t for t in times if t not in present]
    inserted, raced = backfill_store.insert_backfill(
        engine, job.id, new, per_second=settings.backfill_fires_per_second, now=now
    )
    return BackfillResult(fires=inserted, skipped_existing=len(times) - len(new) + raced)
