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


@pytest.mark.parametrize("resume", ["set_enabled", "update_job"])
def test_a_job_created_paused_and_resumed_later_misfires_nothing(sqlite_engine: Engine, resume: str) -> None:
    """The misfire window starts when the job was last enabled: the minutes it was paused are
    neither caught up nor recorded MISSED; the first fire after the resume is on time."""
    from tickwork.store.jobs import get_job, set_enabled, update_job

    spec = JobSpec(
        name="paused", cron_expression="0 * * * * *", handler_type="python", handler_data="x", enabled=False
    )
    job = create_job(sqlite_engine, spec, now=BASE)
    resumed_at = BASE + timedelta(minutes=10, seconds=20)
    if resume == "set_enabled":
        set_enabled(sqlite_engine, job.id, True, now=resumed_at)
    else:
        update_job(sqlite_engine, job.id, spec.model_copy(update={"enabled": True}), now=resumed_at)
    assert get_job(sqlite_engine, job.id).next_fire_at == datetime(2030, 1, 1, 0, 11, tzinfo=UTC)
    # A scheduler that looks 20 s after the resume (past the 1 s grace of the 00:10 fire).
    result = fire_due_jobs(sqlite_engine, now=resumed_at + timedelta(seconds=20), default_grace_seconds=1)
    assert result.rows == {} and result.to_publish == []
    result = fire_due_jobs(
        sqlite_engine, now=BASE + timedelta(minutes=11, seconds=0.1), default_grace_seconds=1
    )
    assert [(a.scheduled_for.minute, a.trigger) for a in result.to_publish] == [(11, "schedule")]
    assert dict(result.rows) == {"PENDING": 1}


def test_resuming_an_enabled_job_keeps_an_outages_misfires(sqlite_engine: Engine) -> None:
    from tickwork.store.jobs import set_enabled

    spec = JobSpec(name="on", cron_expression="0 * * * * *", handler_type="python", handler_data="x")
    job = create_job(sqlite_engine, spec, now=BASE)
    set_enabled(sqlite_engine, job.id, True, now=BASE + timedelta(minutes=10, seconds=20))
    result = fire_due_jobs(
        sqlite_engine, now=BASE + timedelta(minutes=10, seconds=30), default_grace_seconds=1
    )
    assert [a.trigger for a in result.to_publish] == ["misfire"]
