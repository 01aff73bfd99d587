"""The words every layer speaks: run statuses, handler types, policies, triggers, ``utcnow``.

The bottom of the package: it imports nothing from tickwork, so the store, the schedule math,
the messaging and the API can all use these names without importing each other.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, aware UTC (the store refuses naive datetimes)."""
    return datetime.now(UTC)


class RunStatus(enum.StrEnum):
    """Life of one attempt row."""

    PENDING = "PENDING"  # written with the fire; the outbox row until a worker claims it
    RUNNING = "RUNNING"  # claimed by exactly one worker
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"  # this attempt failed; a retry row may follow
    DEAD = "DEAD"  # retries spent: in the dead-letter queue
    REPLAYED = "REPLAYED"  # was DEAD, replayed as a new attempt
    DISCARDED = "DISCARDED"  # was DEAD, purged from the dead-letter queue
    MISSED = "MISSED"  # a fire not made: no scheduler ran in time (misfire policy)
    SKIPPED = "SKIPPED"  # a fire not made by policy (overlap forbid, misfire skip)


ACTIVE_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING)
FINAL_STATUSES = tuple(s for s in RunStatus if s not in ACTIVE_STATUSES)


class HandlerType(enum.StrEnum):
    HTTP = "http"
    PYTHON = "python"


class MisfirePolicy(enum.StrEnum):
    FIRE_ONCE = "fire_once"
    FIRE_ALL = "fire_all"
    SKIP = "skip"


class OverlapPolicy(enum.StrEnum):
    ALLOW = "allow"
    FORBID = "forbid"
    REPLACE = "replace"


class RunTrigger(enum.StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"
    REPLAY = "replay"
    MISFIRE = "misfire"
    BACKFILL = "backfill"


class NotificationStatus(enum.StrEnum):
    PENDING = "PENDING"  # recorded (with the state change it reports); not delivered yet
    DELIVERED = "DELIVERED"  # the target answered 2xx
    FAILED = "FAILED"  # retried until the delivery deadline, never answered 2xx
