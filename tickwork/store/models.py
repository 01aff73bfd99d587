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
    "HandlerType",
    "Job",
    "JobRun",
    "JobSnapshot",
    "LongText",
    "MisfirePolicy",
    "OverlapPolicy",
    "RunStatus",
    "RunTrigger",
    "UTCDateTime",
    "jobs_table",
    "runs_table",
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
    source: Mapped[str] = mapped_column(String(16), default="api")
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("job_id", "scheduled_for", "attempt", name="uq_job_runs_fire_attempt"),
        Index("ix_job_runs_job_id_id", "job_id", "id"),
        Index("ix_job_runs_status_available", "status", "available_at"),
        Index("ix_job_runs_created_at", "created_at"),
        Index("ix_job_runs_worker_status", "worker_id", "status"),
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
    next_fire_at: datetime | None
    version: int


#: The ``jobs`` columns of a :class:`JobSnapshot`, in its field order.
JOB_SNAPSHOT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JobSnapshot))

jobs_table = cast(Table, Job.__table__)
runs_table = cast(Table, JobRun.__table__)
