"""Ids are never reused (issue 9): SQLite hands out max(rowid)+1 unless a table is AUTOINCREMENT."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tickwork.spec import JobSpec
from tickwork.store.engine import make_engine, upgrade
from tickwork.store.jobs import create_job, delete_job
from tickwork.store.models import RunStatus
from tickwork.store.recorder import AttemptRecorder
from tickwork.store.runs import claim_attempt, get_run, insert_run

pytestmark = pytest.mark.unit

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def spec(name: str) -> JobSpec:
    return JobSpec.model_validate({"name": name, "handlerType": "http", "handlerData": "http://x.test/"})


def test_deleted_newest_job_and_run_ids_are_not_handed_out_again(sqlite_engine: Engine) -> None:
    first = create_job(sqlite_engine, spec("a"))
    run = insert_run(sqlite_engine, job_id=first.id, scheduled_for=WHEN)
    delete_job(sqlite_engine, first.id)  # the newest job and (by cascade) the newest run
    second = create_job(sqlite_engine, spec("a"))
    assert second.id > first.id
    assert insert_run(sqlite_engine, job_id=second.id, scheduled_for=WHEN) > run


def test_upgrading_an_existing_database_keeps_its_rows_and_stops_reuse(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0001")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (name, timezone, handler_type, handler_data, retry_count,"
                " retry_backoff_seconds, max_backoff_seconds, queue, misfire_policy, overlap_policy,"
                " enabled, source, version, created_at, updated_at) VALUES ('old', 'UTC', 'http',"
                " 'http://x.test/', 0, 10, 3600, 'default', 'fire_once', 'allow', 1, 'api', 1,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                'INSERT INTO job_runs (job_id, scheduled_for, attempt, status, "trigger", available_at,'
                " created_at, updated_at) VALUES (1, '2026-01-01 00:00:00', 1, 'SUCCESS', 'schedule',"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    upgrade(url)  # rebuilds both tables (foreign keys off: nothing cascades)
    engine = make_engine(url)
    try:
        assert get_run(engine, 1).status == "SUCCESS" and get_run(engine, 1).http_status is None
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM job_runs WHERE id = 1"))
        assert insert_run(engine, job_id=1, scheduled_for=WHEN) == 2
    finally:
        engine.dispose()


def test_recorder_writes_the_http_status_on_sqlite(sqlite_engine: Engine) -> None:
    job = create_job(sqlite_engine, spec("h"))
    run = insert_run(sqlite_engine, job_id=job.id, scheduled_for=WHEN)
    assert claim_attempt(sqlite_engine, run, "w")
    recorder = AttemptRecorder(sqlite_engine)
    try:
        assert recorder.finish(run, "w", status=RunStatus.SUCCESS, output="{}", http_status=201)
    finally:
        recorder.close()
    row = get_run(sqlite_engine, run)
    assert (row.status, row.output, row.http_status, row.traceback) == ("SUCCESS", "{}", 201, None)
