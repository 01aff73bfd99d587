"""maxConcurrency's claim on SQLite (the embedded mode: one process, a process-wide lock)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from tickwork.spec import JobSpec
from tickwork.store.concurrency import Claim, claim_within_limit
from tickwork.store.jobs import create_job
from tickwork.store.runs import insert_run

pytestmark = pytest.mark.unit


def test_threads_racing_for_two_slots_get_exactly_two(sqlite_engine: Engine) -> None:
    spec = {"name": "two", "handlerType": "http", "handlerData": "http://127.0.0.1:9/x", "maxConcurrency": 2}
    job = create_job(sqlite_engine, JobSpec.model_validate(spec))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    runs = [
        insert_run(sqlite_engine, job_id=job.id, scheduled_for=at + timedelta(seconds=i)) for i in range(8)
    ]
    answers: list[Claim] = []
    lock = threading.Lock()

    def claim(run_id: int) -> None:
        answer = claim_within_limit(sqlite_engine, run_id, f"w{run_id}", job_id=job.id)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=claim, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(a.value for a in answers) == ["claimed"] * 2 + ["full"] * 6
