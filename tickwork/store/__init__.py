"""Persistence: models, migrations and named queries for ``jobs`` and ``job_runs``."""

from tickwork.store.engine import ensure_migrated, make_engine, session_factory, upgrade
from tickwork.store.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Base,
    HandlerType,
    Job,
    JobRun,
    MisfirePolicy,
    OverlapPolicy,
    RunStatus,
    RunTrigger,
    utcnow,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "Base",
    "HandlerType",
    "Job",
    "JobRun",
    "MisfirePolicy",
    "OverlapPolicy",
    "RunStatus",
    "RunTrigger",
    "ensure_migrated",
    "make_engine",
    "session_factory",
    "upgrade",
    "utcnow",
]
