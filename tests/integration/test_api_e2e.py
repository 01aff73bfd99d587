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
from tests.worker_helpers import wait_for
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


def _runs(api: Api, job_id: int) -> list[dict[str, object]]:
    return api.client.get(f"/jobs/{job_id}/runs?limit=100", headers=api.viewer).json()["items"]


def _wait_for_successes(api: Api, job_id: int, count: int) -> list[dict[str, object]]:
    def enough() -> list[dict[str, object]] | None:
        items = _runs(api, job_id)
        return items if sum(1 for r in items if r["status"] == "SUCCESS") >= count else None

    return wait_for(enough, 40, 0.25, f"{count} successful runs")


def _wait_until_settled(api: Api, job_id: int) -> int:
    """How many runs the job has once none is PENDING or RUNNING (waits up to 40 s)."""

    def settled() -> tuple[int] | None:  # a tuple: zero runs settled is still an answer
        items = _runs(api, job_id)
        return None if any(r["status"] in ("PENDING", "RUNNING") for r in items) else (len(items),)

    return wait_for(settled, 40, 0.25, "runs no longer PENDING or RUNNING")[0]
