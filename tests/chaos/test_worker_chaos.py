"""Real ``tickwork worker`` processes killed with SIGKILL or stopped with SIGTERM."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import Engine

from tests import worker_jobs
from tests.worker_helpers import count_running, runs_of_job, wait_for, worker_processes
from tickwork.config import Settings
from tickwork.middleware.heartbeat import WORKER_LOST, HeartbeatStore, reap_lost_attempts
from tickwork.store.runs import get_run
from tickwork.worker import setup_broker

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]


@pytest.fixture
def publisher(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[dramatiq.Broker]:
    broker = setup_broker(cluster_settings, engine=mysql_engine)
    yield broker
    broker.close()


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_sigkill_mid_job_is_reaped_and_completed_by_another_worker(
    cluster_settings: Settings, mysql_engine: Engine, publisher: dramatiq.Broker, tmp_path: Path
) -> None:
    settings = cluster_settings.model_copy(update={"heartbeat_ttl_seconds": 3.0})
    marker = tmp_path / "long.txt"
    store = HeartbeatStore.from_settings(settings)
    with worker_processes(settings, tmp_path, 2, threads=2) as workers:
        run_id = worker_jobs.tw_long.send(str(marker), 4)
        started = wait_for(lambda: _lines(marker), 20, what="the job to start")
        victim_pid = int(started[0][1])
        first = get_run(mysql_engine, run_id)
        assert first.status == "RUNNING" and first.worker_id
        assert f"-{victim_pid}-" in first.worker_id
        # The worker process running the job is in the process group of one of our workers.
        victim = next(w for w in workers if os.getpgid(victim_pid) == w.pid)
        victim.kill()
        killed_at = time.monotonic()

        def finished() -> bool:
            reap_lost_attempts(settings, mysql_engine, publisher, store)
            rows = runs_of_job(mysql_engine, first.job_id)
            return any(r.status == "SUCCESS" for r in rows)

        wait_for(finished, 60, 0.5, "another worker to complete the job")
        print(f"recovered {time.monotonic() - killed_at:.1f} s after SIGKILL")
        rows = runs_of_job(mysql_engine, first.job_id)
    store.close()
    assert [(r.attempt, r.status) for r in rows] == [(1, "FAILED"), (2, "SUCCESS")]
    assert rows[0].error == WORKER_LOST
    assert rows[0].worker_id != rows[1].worker_id
    assert rows[1].trigger == "retry" and rows[1].output == "done"
    assert count_running(mysql_engine) == 0
    events = _lines(marker)
    assert [e[0] for e in events] == ["start", "start", "done"]
    assert int(events[1][1]) != victim_pid


def test_sigterm_lets_in_flight_jobs_finish_and_loses_nothing(
    cluster_settings: Settings, mysql_engine: Engine, publisher: dramatiq.Broker, tmp_path: Path
) -> None:
    marker = tmp_path / "long.txt"
    with worker_processes(cluster_settings, tmp_path, 1, threads=1) as workers:
        run_ids = [worker_jobs.tw_long.send(str(marker), 2) for _ in range(3)]
        wait_for(lambda: _lines(marker), 20, what="the first job to start")
        code = workers[0].terminate(30)
        assert code == 0, workers[0].output()
    # The in-flight job finished; the other two were given back to RabbitMQ, not lost or stuck.
    in_flight = [get_run(mysql_engine, r) for r in run_ids]
    assert sum(r.status == "SUCCESS" for r in in_flight) == 1
    assert sum(r.status == "PENDING" for r in in_flight) == 2
    assert count_running(mysql_engine) == 0
    with worker_processes(cluster_settings, tmp_path / "..", 1, threads=2):
        wait_for(
            lambda: all(get_run(mysql_engine, r).status == "SUCCESS" for r in run_ids),
            30,
            what="the given-back jobs to run on a new worker",
        )
