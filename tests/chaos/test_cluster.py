"""The cluster as deployed: a ``tickwork scheduler`` and two ``tickwork worker`` processes.

No test code stands in for a part here: the scheduler's own dead-worker sweep recovers the
attempt of a SIGKILLed worker, and the processes' ``/metrics`` endpoints report what happened.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import httpx
import pytest
from sqlalchemy import Engine

from tests import worker_jobs
from tests.conftest import settings_env, tickwork_cmd
from tests.worker_helpers import WorkerProcess, count_running, runs_of_job, wait_for
from tickwork.config import Settings
from tickwork.middleware.heartbeat import WORKER_LOST, HeartbeatStore
from tickwork.store.runs import get_run
from tickwork.worker import setup_broker

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> str:
    """The exposition text; empty while the process is still starting its server."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.ConnectError:
        return ""


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample, or 0 when it is absent."""
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


@pytest.fixture
def publisher(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[dramatiq.Broker]:
    broker = setup_broker(cluster_settings, engine=mysql_engine)
    yield broker
    broker.close()


def test_scheduler_sweep_recovers_a_killed_workers_attempt_and_metrics_show_it(
    cluster_settings: Settings, mysql_engine: Engine, publisher: dramatiq.Broker, tmp_path: Path
) -> None:
    settings = cluster_settings.model_copy(
        update={"heartbeat_ttl_seconds": 3.0, "heartbeat_interval_seconds": 0.5}
    )
    scheduler_port, worker_ports = free_port(), [free_port(), free_port()]
    scheduler_log = open(tmp_path / "scheduler.log", "wb")  # noqa: SIM115
    scheduler = subprocess.Popen(
        tickwork_cmd("scheduler", "--node-id", "acceptance-1"),
        env=settings_env(settings, metrics_port=scheduler_port, heartbeat_ttl_seconds=3),
        stdout=scheduler_log,
        stderr=subprocess.STDOUT,
    )
    workers = [
        WorkerProcess(settings, tmp_path / f"worker{i}.log", threads=2, extra_env={"metrics_port": port})
        for i, port in enumerate(worker_ports)
    ]
    store = HeartbeatStore.from_settings(settings)
    marker = tmp_path / "long.txt"
    try:
        wait_for(lambda: len(store.alive_workers()) >= 2, 60, 0.2, "two worker heartbeats")
        wait_for(
            lambda: (
                sample(scrape(scheduler_port), "tickwork_scheduler_is_leader", node_id="acceptance-1") == 1.0
            ),
            30,
            0.3,
            "the scheduler to lead and report it",
        )
        run_id = worker_jobs.tw_long.send(str(marker), 3)
        started = wait_for(
            lambda: marker.exists() and marker.read_text().split(), 30, what="the job to start"
        )
        victim_pid = int(started[1])
        victim = next(w for w in workers if os.getpgid(victim_pid) == w.pid)
        survivor_port = worker_ports[1 - workers.index(victim)]
        victim.kill()
        job_id = get_run(mysql_engine, run_id).job_id
        # Nothing in this test reaps: the scheduler's dead-worker sweep must.
        wait_for(
            lambda: any(r.status == "SUCCESS" for r in runs_of_job(mysql_engine, job_id)),
            60,
            0.5,
            "the scheduler's sweep to retry the lost attempt on the other worker",
        )
        rows = runs_of_job(mysql_engine, job_id)
        assert [(r.attempt, r.status) for r in rows] == [(1, "FAILED"), (2, "SUCCESS")]
        assert rows[0].error == WORKER_LOST
        assert count_running(mysql_engine) == 0

        text = wait_for(lambda: scrape(survivor_port), 10, 0.2, "the worker's metrics endpoint")
        assert sample(text, "tickwork_runs_total", job_name="tw_long", status="SUCCESS") == 1.0
        assert sample(text, "tickwork_attempt_duration_seconds_count", status="SUCCESS") >= 1.0
        leases = sample(scrape(scheduler_port), "tickwork_lease_renewals_total", result="renewed")
        assert leases >= 1.0
    finally:
        for worker in workers:
            worker.stop()
        scheduler.terminate()
        try:
            scheduler.wait(20)
        except subprocess.TimeoutExpired:
            scheduler.kill()
        scheduler_log.close()
        store.close()
