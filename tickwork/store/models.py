"""SQLAlchemy 2 models for ``jobs`` and ``job_runs`` (one row per attempt)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The vocabulary lives in tickwork.vocabulary (below the store); re-exported for old imports.
from tickwork.vocabulary import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    HandlerType,
    MisfirePolicy,
    NotificationStatus,
    OverlapPolicy,
    RunStatus,
    RunTrigger,
    utcnow,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "JOB_SNAPSHOT_COLUMNS",
    "Base",
    "BigId",
    "Event",
    "HandlerType",
    "Job",
    "JobRun",
    "JobSnapshot",
    "LongText",
    "MisfirePolicy",
    "NotificationStatus",
    "OverlapPolicy",
    "RunStatus",
    "RunTrigger",
    "TriggerKey",
    "UTCDateTime",
    "events_table",
    "jobs_table",
    "runs_table",
    "trigger_keys_table",
    "utcnow",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (microseconds on MySQL), returns aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime passed to the store; use aware UTC datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql")
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    cron_expression: Mapped[str | None] = mapped_column(String(200))
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    handler_type: Mapped[str] = mapped_column(String(16))
    handler_data: Mapped[str] = mapped_column(String(2048))
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    retry_backoff_seconds: Mapped[int] = mapped_column(Integer, default=10)
    max_backoff_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    queue: Mapped[str] = mapped_column(String(64), default="default")
    misfire_policy: Mapped[str] = mapped_column(String(16), default=MisfirePolicy.FIRE_ONCE.value)
    misfire_grace_seconds: Mapped[float | None] = mapped_column(Float)
    overlap_policy: Mapped[str] = mapped_column(String(16), default=OverlapPolicy.ALLOW.value)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Short labels to filter by (``GET /jobs?tag=``); a JSON list, empty when none.
    tags: Mapped[list[str] | None] = mapped_column(JSON)
    #: The most attempts of this job RUNNING at once across the cluster (NULL: unlimited).
    max_concurrency: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16), default="api")
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # -- alerts (issue 13): see tickwork/alerts.py and tickwork/store/alerts.py --------------
    #: A fire is late when it has not reached SUCCESS this long after its scheduled time.
    late_after_seconds: Mapped[int | None] = mapped_column(Integer)
    #: Pause the job after this many consecutive DEAD runs.
    pause_after_failures: Mapped[int | None] = mapped_column(Integer)
    #: Where this job's notifications go (besides TICKWORK_NOTIFY_URL).
    notify_url: Mapped[str | None] = mapped_column(String(2048))
    #: Why the job is paused: ``manual`` or ``auto: N consecutive dead runs`` (NULL: not paused).
    paused_reason: Mapped[str | None] = mapped_column(String(200))
    #: When the job was last resumed: auto-pause counts only the dead runs made since.
    resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When a fire of this job was last reported late; NULL again once the job next succeeds.
    late_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the job last went DEAD without a success since (a ``job.recovered`` is owed).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The scheduled time of the last fire reported late (a missing fire has no run row to mark).
    late_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("name", name="uq_jobs_name"),
        # SQLite reuses the largest rowid after a delete unless the table says AUTOINCREMENT.
        {"sqlite_autoincrement": True},
    )
    __mapper_args__ = {"version_id_col": version}


class JobRun(Base):
    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigId, ForeignKey("jobs.id", ondelete="CASCADE"))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.PENDING.value)
    trigger: Mapped[str] = mapped_column(String(16), default=RunTrigger.SCHEDULE.value)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    message_id: Mapped[str | None] = mapped_column(String(64))
    #: Earliest start of this attempt (later than ``created_at`` for a backed-off retry).
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Arguments of an on-demand send (``fn.send(...)``); NULL means the job's parameters.
    arguments: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    output: Mapped[str | None] = mapped_column(LongText)
    #: The status code of an http attempt's response (NULL: no response, or a Python job).
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(LongText)
    #: When the late sweep reported this fire late (set on the fire's first attempt row, once).
    late_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "scheduled_for", "attempt", name="uq_job_runs_fire_attempt"),
        Index("ix_job_runs_job_id_id", "job_id", "id"),
        # The outbox sweep's two ranges (never published; published and unclaimed), migration 0006.
        Index("ix_job_runs_status_enqueued", "status", "enqueued_at", "available_at"),
        Index("ix_job_runs_created_at", "created_at"),
        {"sqlite_autoincrement": True},
    )


class Event(Base):
    """One change to a job or a run: the audit trail (``GET /events``).

    No foreign key to ``jobs``: a job's ``job.deleted`` event outlives the job.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Who: a token's ``sub``, or ``cli``, ``decorator``, ``tickwork``.
    actor: Mapped[str] = mapped_column(String(200))
    #: The token's role (``admin``); NULL for the CLI, the decorator and tickwork itself.
    role: Mapped[str | None] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[int | None] = mapped_column(BigId)
    run_id: Mapped[int | None] = mapped_column(BigId)
    #: What changed: ``{"changes": {field: {"before", "after"}}}`` for definition changes,
    #: counts and ids for the others.
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_events_job_id_id", "job_id", "id"),
        Index("ix_events_kind_id", "kind", "id"),
        Index("ix_events_created_at", "created_at"),
        {"sqlite_autoincrement": True},
    )


class TriggerKey(Base):
    """An ``Idempotency-Key`` of ``POST /jobs/{id}/trigger`` and the run it made (24 h)."""

    __tablename__ = "trigger_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigId, ForeignKey("jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    #: SHA-256 of the request body as sent: a repeat with another body is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "key", name="uq_trigger_keys_job_key"),
        Index("ix_trigger_keys_created_at", "created_at"),
        {"sqlite_autoincrement": True},
    )


class JobLateWatermark(Base):
    """Fires of the job scheduled before ``checked_until`` are decided (late or on time).

    Its own table, not a ``jobs`` column: the late sweep moves it every second for a per-second
    job, and a ``jobs`` row it locked would be skipped by the ticker (``FOR UPDATE SKIP LOCKED``).
    """

    __tablename__ = "job_late_watermarks"

    job_id: Mapped[int] = mapped_column(BigId, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    checked_until: Mapped[datetime] = mapped_column(UTCDateTime)


class Notification(Base):
    """The outbox of webhook notifications: one row per event and target."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(32))
    # No foreign keys: a notification outlives the job or run it reports (history).
    job_id: Mapped[int | None] = mapped_column(BigId)
    run_id: Mapped[int | None] = mapped_column(BigId)
    target: Mapped[str] = mapped_column(String(2048))
    #: The exact JSON body POSTed (and signed).
    payload: Mapped[str] = mapped_column(LongText)
    status: Mapped[str] = mapped_column(String(16), default=NotificationStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_notifications_status_next", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )


@dataclass(slots=True)
class JobSnapshot:
    """The ``jobs`` columns a fire needs (its plan and its message), read without the ORM.

    Building 1,000 ORM objects costs ~70 ms a tick; one of these costs ~0.5 µs (not frozen: a
    frozen dataclass's ``__init__`` costs ~2 µs, 2 ms a tick of 1,000 fires). Read-only by
    convention. Its field names are the column names: :data:`JOB_SNAPSHOT_COLUMNS` lists them.
    """

    id: int
    name: str
    cron_expression: str | None
    run_at: datetime | None
    timezone: str
    handler_type: str
    handler_data: str
    parameters: dict[str, Any] | None
    retry_count: int
    retry_backoff_seconds: int
    max_backoff_seconds: int
    timeout_seconds: float | None
    queue: str
    misfire_policy: str
    misfire_grace_seconds: float | None
    overlap_policy: str
    max_concurrency: int | None
    next_fire_at: datetime | None
    version: int


#: The ``jobs`` columns of a :class:`JobSnapshot`, in its field order.
JOB_SNAPSHOT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JobSnapshot))

jobs_table = cast(Table, Job.__table__)
runs_table = cast(Table, JobRun.__table__)
events_table = cast(Table, Event.__table__)
trigger_keys_table = cast(Table, TriggerKey.__table__)
notifications_table = cast(Table, Notification.__table__)
watermarks_table = cast(Table, JobLateWatermark.__table__)
