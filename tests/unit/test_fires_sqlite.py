"""The embedded mode: fires on SQLite, and the service with the in-memory broker and lease."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from tickwork.config import load_settings
from tickwork.scheduler.service import SchedulerService
from tickwork.spec import JobSpec
from tickwork.store.fires import fire_due_jobs
from tickwork.store.jobs import create_job
from tickwork.store.models import runs_table

pytestmark = pytest.mark.unit

BASE = datetime(2030, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)


def test_fires_on_sqlite(sqlite_engine: Engine) -> None:
    spec = JobSpec(name="s", cron_expression="* * * * * *", handler_type="python", handler_data="x")
    job = create_job(sqlite_engine, spec, now=BASE)
    result = fire_due_jobs(sqlite_engine, now=BASE + timedelta(seconds=3))
    assert [a.scheduled_for.second for a in result.to_publish] == [1, 2, 3]
    assert {a.job.id for a in result.to_publish} == {job.id}
    assert fire_due_jobs(sqlite_engine, now=BASE + timedelta(seconds=3)).to_publish == []


def test_fires_carry_their_trigger_for_the_lag_metric(sqlite_engine: Engine) -> None:
    """A fire late past the grace is a catch-up (``misfire``), an on-time one ``schedule``."""
    spec = JobSpec(name="late", cron_expression="0 * * * * *", handler_type="python", handler_data="x")
    create_job(sqlite_engine, spec, now=BASE)
    late = fire_due_jobs(sqlite_engine, now=BASE + timedelta(minutes=10, seconds=30), default_grace_seconds=1)
    assert [a.trigger for a in late.to_publish] == ["misfire"]
    on_time = fire_due_jobs(sqlite_engine, now=BASE + timedelta(minutes=11), default_grace_seconds=1)
    assert [a.trigger for a in on_time.to_publish] == ["schedule"]


def test_embedded_service_fires(sqlite_engine: Engine, namespace: str) -> None:
    settings = load_settings(database_url=str(sqlite_engine.url), namespace=namespace)
    service = SchedulerService(settings, engine=sqlite_engine)
    due = datetime.now(UTC) + timedelta(seconds=0.5)
    create_job(sqlite_engine, JobSpec(name="once", run_at=due, handler_type="python", handler_data="x"))
    service.start()
    try:
        time.sleep(1.5)
        assert service.is_leader
    finally:
        service.shutdown()
    with sqlite_engine.connect() as conn:
        rows = conn.execute(select(runs_table)).mappings().all()
    assert len(rows) == 1 and rows[0]["enqueued_at"] is not None
    assert service.stats["published"] == 1
