"""Dashboard queries on SQLite (the embedded mode): job rows with their newest run, the timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from tickwork.spec import JobSpec
from tickwork.store import RunStatus, stats
from tickwork.store.jobs import create_job
from tickwork.store.runs import claim_attempt, finish_attempt, insert_run

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 30, 20, tzinfo=UTC)


def job(engine: Engine, name: str) -> int:
    spec = JobSpec.model_validate({"name": name, "handlerType": "http", "handlerData": "http://x.test/"})
    return create_job(engine, spec, now=NOW).id


def test_job_summaries_page_by_id_with_newest_run(sqlite_engine: Engine) -> None:
    ids = [job(sqlite_engine, f"j{i}") for i in range(5)]
    insert_run(sqlite_engine, job_id=ids[1], scheduled_for=NOW, status=RunStatus.FAILED, now=NOW)
    insert_run(sqlite_engine, job_id=ids[1], scheduled_for=NOW, attempt=2, status=RunStatus.DEAD, now=NOW)
    page, cursor = stats.job_summaries(sqlite_engine, limit=2)
    assert [j.name for j in page] == ["j0", "j1"] and cursor == ids[1]
    assert page[0].last_status is None and page[1].last_status == "DEAD"
    rest, cursor = stats.job_summaries(sqlite_engine, after_id=ids[1], limit=10)
    assert [j.name for j in rest] == ["j2", "j3", "j4"] and cursor is None
    assert [j.name for j in stats.job_summaries(sqlite_engine, name_contains="j3")[0]] == ["j3"]
    assert [j.name for j in stats.job_summaries(sqlite_engine, name_contains="3")[0]] == ["j3"]
    # LIKE wildcards in the filter are literal.
    assert stats.job_summaries(sqlite_engine, name_contains="j%")[0] == []
    assert stats.dead_count(sqlite_engine) == 1 and stats.pending_count(sqlite_engine) == 0


def test_timeline_slots_counts_and_lag(sqlite_engine: Engine) -> None:
    jid = job(sqlite_engine, "timed")
    # Two first attempts 3 minutes ago (0.5 s and 1.5 s late), one retry now, one outside the window.
    for k, late in enumerate((0.5, 1.5)):
        created = NOW - timedelta(minutes=3)
        scheduled = created - timedelta(seconds=k)
        run = insert_run(sqlite_engine, job_id=jid, scheduled_for=scheduled, now=created)
        claim_attempt(sqlite_engine, run, "w", now=scheduled + timedelta(seconds=late))
        finish_attempt(sqlite_engine, run, "w", status=RunStatus.SUCCESS, now=created + timedelta(seconds=2))
    retry = insert_run(sqlite_engine, job_id=jid, scheduled_for=NOW - timedelta(hours=1), attempt=2, now=NOW)
    claim_attempt(sqlite_engine, retry, "w", now=NOW)
    insert_run(sqlite_engine, job_id=jid, scheduled_for=NOW, attempt=3, now=NOW - timedelta(minutes=20))
    t = stats.run_timeline(sqlite_engine, minutes=10, now=NOW)
    assert len(t["minutes"]) == 10
    assert t["until"] == datetime(2026, 11, 23, 12, 31, tzinfo=UTC)
    assert t["counts"]["SUCCESS"][6] == 2  # 12:27
    assert t["counts"]["RUNNING"][9] == 1  # 12:30, the retry
    assert sum(sum(v) for v in t["counts"].values()) == 3
    assert t["lag_avg"][6] == pytest.approx(1.0, abs=0.01)
    assert t["lag_max"][6] == pytest.approx(1.5, abs=0.01)
    assert t["lag_avg"][9] is None  # a retry's lag is not scheduling lag


def test_timeline_lag_of_runs_in_different_seconds_of_one_minute_shares_one_bucket(
    sqlite_engine: Engine,
) -> None:
    """Runs created at 12:27:05 (98 s late) and 12:27:40 (2 s late): one minute, avg 50, max 98."""
    jid = job(sqlite_engine, "spread")
    minute = datetime(2026, 11, 23, 12, 27, tzinfo=UTC)
    for second, late in ((5, 98.0), (40, 2.0)):
        created = minute + timedelta(seconds=second)
        run = insert_run(sqlite_engine, job_id=jid, scheduled_for=created, now=created)
        claim_attempt(sqlite_engine, run, "w", now=created + timedelta(seconds=late))
    t = stats.run_timeline(sqlite_engine, minutes=10, now=NOW)
    slot = t["minutes"].index(int(minute.timestamp() // 60))
    assert t["counts"]["RUNNING"][slot] == 2
    assert t["lag_max"][slot] == pytest.approx(98.0, abs=0.01)
    assert t["lag_avg"][slot] == pytest.approx(50.0, abs=0.01)
    assert [i for i, v in enumerate(t["lag_max"]) if v is not None] == [slot]
