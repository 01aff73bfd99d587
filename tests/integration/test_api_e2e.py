"""End to end on MariaDB, RabbitMQ and Redis: a job created over HTTP calls a loopback server on
schedule (every second), and its runs appear in ``GET /jobs/{id}/runs``.

The API app, a scheduler node and worker threads run in this process on the real services.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.http_target import Target, http_target
from tests.integration.api_support import Api, make_api
from tickwork.config import Settings
from tickwork.scheduler.service import SchedulerService
from tickwork.worker import setup_broker, start_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def target() -> Iterator[Target]:
    with http_target() as served:
        yield served


def test_job_created_over_http_runs_on_schedule(
    cluster_settings: Settings, mysql_engine: Engine, target: Target
) -> None:
    broker = setup_broker(cluster_settings, engine=mysql_engine)
    worker = start_worker(cluster_settings, broker, threads=2)
    scheduler = SchedulerService(cluster_settings, engine=mysql_engine, broker=broker)
    scheduler.start()
    try:
        for api in make_api(cluster_settings, mysql_engine, hook=False):
            job = api.create(
                name="every-second",
                cronExpression="* * * * * *",
                handlerData=f"{target.url}/post",
                retryCount=1,
                retryBackoffSeconds=1,
            )
            runs = _wait_for_successes(api, job["id"], 3)
            assert target.wait_for(3, timeout=5) >= 3
            scheduled = [r["scheduledFor"] for r in runs if r["trigger"] == "schedule"]
            assert len(scheduled) == len(set(scheduled))  # one run per scheduled second
            success = next(r for r in runs if r["status"] == "SUCCESS")
            assert success["workerId"] and success["startedAt"] and success["finishedAt"]
            one = api.client.get(f"/runs/{success['id']}", headers=api.viewer).json()
            assert one["status"] == "SUCCESS" and one["jobId"] == job["id"]

            paused = api.client.post(f"/jobs/{job['id']}/pause", headers=api.admin)
            assert paused.status_code == 200
            time.sleep(1.5)  # a fire already written ahead of the pause may still land
            # Then every fire made is settled (none PENDING or RUNNING) ...
            settled = _wait_until_settled(api, job["id"])
            before = target.count()
            time.sleep(2.5)
            # ... and no fire is made while paused, so nothing more reaches the target.
            assert _wait_until_settled(api, job["id"]) == settled
            assert target.count() == before
    finally:
        scheduler.shutdown()
        worker.stop(timeout=10)
        broker.close()


def _wait_for_successes(api: Api, job_id: int, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 40
    items: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        response = api.client.get(f"/jobs/{job_id}/runs?limit=100", headers=api.viewer)
        items = response.json()["items"]
        if sum(1 for r in items if r["status"] == "SUCCESS") >= count:
            return items
        time.sleep(0.25)
    raise AssertionError(f"fewer than {count} successful runs after 40 s: {items}")


def _wait_until_settled(api: Api, job_id: int) -> int:
    """How many runs the job has once none is PENDING or RUNNING (waits up to 40 s)."""
    deadline = time.monotonic() + 40
    items: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        items = api.client.get(f"/jobs/{job_id}/runs?limit=100", headers=api.viewer).json()["items"]
        if not any(r["status"] in ("PENDING", "RUNNING") for r in items):
            return len(items)
        time.sleep(0.25)
    raise AssertionError(f"runs still PENDING or RUNNING after 40 s: {items}")
