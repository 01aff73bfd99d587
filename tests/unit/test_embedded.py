"""The embedded mode in one process: SQLite, the in-process broker, scheduler and worker threads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.http_target import Target, http_target
from tickwork.api.auth import create_token
from tickwork.config import Settings, load_settings
from tickwork.embedded import Embedded, build
from tickwork.spec import JobSpec
from tickwork.store.engine import make_engine, upgrade
from tickwork.store.jobs import create_job
from tickwork.store.models import RunStatus, RunTrigger
from tickwork.store.runs import get_run, insert_run

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    return load_settings(database_url=url, broker_url="memory://", redis_url="", namespace="twembedded")


@pytest.fixture
def target() -> Iterator[Target]:
    with http_target() as served:
        yield served


def started(settings: Settings) -> Embedded:
    parts = build(settings, engine=make_engine(settings), worker_threads=2)
    parts.start()
    return parts


def wait_for_runs(client: TestClient, job_id: int, headers: dict[str, str], *, successes: int) -> list[Any]:
    deadline = time.monotonic() + 30
    items: list[Any] = []
    while time.monotonic() < deadline:
        items = client.get(f"/jobs/{job_id}/runs?limit=100", headers=headers).json()["items"]
        if sum(1 for r in items if r["status"] == "SUCCESS") >= successes:
            return items
        time.sleep(0.2)
    raise AssertionError(f"fewer than {successes} successful runs: {items}")


def test_a_job_created_over_http_runs_every_second(settings: Settings, target: Target) -> None:
    parts = started(settings)
    try:
        headers = {"Authorization": f"Bearer {create_token(settings, 'admin')}"}
        with TestClient(parts.app) as client:
            body = {
                "name": "every-second",
                "cronExpression": "* * * * * *",
                "handlerType": "http",
                "handlerData": f"{target.url}/post",
                "retryCount": 3,
                "retryBackoffSeconds": 10,
            }
            created = client.post("/jobs", json=body, headers=headers)
            assert created.status_code == 201, created.text
            runs = wait_for_runs(client, created.json()["id"], headers, successes=3)
            assert {r["trigger"] for r in runs} == {"schedule"}
            fires = sorted(r["scheduledFor"] for r in runs)
            assert len(fires) == len(set(fires))  # one run per scheduled second
            assert target.count() >= 3

            triggered = client.post(f"/jobs/{created.json()['id']}/trigger", headers=headers)
            assert triggered.status_code == 202
            run_id = triggered.json()["id"]
            deadline = time.monotonic() + 15
            while get_run(parts.engine, run_id).status != RunStatus.SUCCESS.value:
                assert time.monotonic() < deadline, get_run(parts.engine, run_id).status
                time.sleep(0.1)
    finally:
        parts.stop()
        parts.engine.dispose()


def test_definitions_and_history_survive_a_restart_and_pending_runs_are_republished(
    settings: Settings, target: Target
) -> None:
    engine = make_engine(settings)
    spec = {"name": "on-demand", "handlerType": "http", "handlerData": f"{target.url}/x"}
    job = create_job(engine, JobSpec.model_validate(spec))
    finished = insert_run(
        engine, job_id=job.id, scheduled_for=datetime(2026, 1, 1, tzinfo=UTC), status=RunStatus.SUCCESS
    )
    # Left PENDING by a process that died before a worker claimed it.
    pending = insert_run(engine, job_id=job.id, scheduled_for=datetime.now(UTC), trigger=RunTrigger.MANUAL)
    # A retry waiting out its backoff must not run early.
    later = insert_run(
        engine,
        job_id=job.id,
        scheduled_for=datetime(2026, 1, 2, tzinfo=UTC),
        attempt=2,
        trigger=RunTrigger.RETRY,
        available_at=datetime.now(UTC) + timedelta(hours=1),
    )
    engine.dispose()

    parts = started(settings)
    try:
        deadline = time.monotonic() + 20
        while get_run(parts.engine, pending).status != RunStatus.SUCCESS.value:
            assert time.monotonic() < deadline, get_run(parts.engine, pending).status
            time.sleep(0.1)
        assert get_run(parts.engine, finished).status == RunStatus.SUCCESS.value
        assert get_run(parts.engine, later).status == RunStatus.PENDING.value
        assert target.count() == 1
        headers = {"Authorization": f"Bearer {create_token(settings, 'viewer')}"}
        with TestClient(parts.app) as client:
            jobs = client.get("/jobs?limit=500", headers=headers).json()["items"]
            # @job functions other tests imported register themselves too (source "decorator").
            assert [j["name"] for j in jobs if j["source"] == "api"] == ["on-demand"]
    finally:
        parts.stop()
        parts.engine.dispose()
