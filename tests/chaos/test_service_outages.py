"""The services underneath go away and come back while a cluster runs (issue 11).

A cluster of real processes (API, 2 schedulers, 2 workers, 10 every-second jobs) runs on
private MariaDB, Redis and RabbitMQ servers (tests/private_services.py). Each test takes one
service away for :data:`OUTAGE` seconds and brings it back; no tickwork process is restarted.
Each asserts (tests/fault_cluster.py): no process exited, every second of every job has exactly
one fire row, nothing is left PENDING or RUNNING after recovery plus the sweep, no attempt
executed twice (counted at the target), every process stops cleanly; and prints the recovery
time (first on-time execution after the service is back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.chaos.conftest import PrivateServices
from tests.fault_cluster import FaultCluster, assert_survived, report
from tests.worker_helpers import wait_for
from tickwork.config import Settings

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

OUTAGE = 8.0
#: Normal running before the fault and after it is healed.
BEFORE = 3.0
AFTER = 10.0


def survive(
    name: str,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    fault: Callable[[], float],
) -> None:
    """Run the cluster, apply ``fault`` (it returns when the service is back: that time), verify."""
    cluster = FaultCluster(settings, engine, tmp_path)
    codes: dict[str, int] = {}
    try:
        cluster.start()
        first = time.time()
        time.sleep(BEFORE)
        began = time.time()
        restored = fault()
        time.sleep(AFTER)
        assert cluster.exited() == {}, f"processes exited: {cluster.exited()}\n{cluster.logs()}"
        wait_for(cluster.ready, 60, 0.5, "the API to be ready again")
        settled_at = time.time()
        cluster.wait_settled(settled_at)
        verdict = cluster.verify(first, settled_at + 1, restored_at=restored)
        leader = cluster.leader()
    finally:
        codes = cluster.stop()
    report(name, verdict, outage_seconds=round(restored - began, 2), leader_at_end=leader)
    assert_survived(cluster, verdict, codes)


def test_rabbitmq_goes_away_and_comes_back(
    private_services: PrivateServices, fault_settings: tuple[Settings, Engine], tmp_path: Path
) -> None:
    rabbitmq = private_services.rabbitmq

    def fault() -> float:
        rabbitmq.stop_app()
        time.sleep(OUTAGE)
        rabbitmq.start_app()
        return time.time()

    survive("rabbitmq stop_app/start_app", *fault_settings, tmp_path, fault)


def test_redis_restarts(
    private_services: PrivateServices, fault_settings: tuple[Settings, Engine], tmp_path: Path
) -> None:
    redis_server = private_services.redis

    def fault() -> float:
        redis_server.stop()  # no persistence: the lease and every heartbeat are gone
        time.sleep(OUTAGE)
        redis_server.start()
        return time.time()

    survive("redis restart", *fault_settings, tmp_path, fault)


def test_redis_paused(
    private_services: PrivateServices, fault_settings: tuple[Settings, Engine], tmp_path: Path
) -> None:
    def fault() -> float:
        private_services.redis.pause(OUTAGE)
        time.sleep(OUTAGE)
        return time.time()

    survive("redis CLIENT PAUSE", *fault_settings, tmp_path, fault)


def test_mariadb_killed_and_restarted(
    private_services: PrivateServices, fault_settings: tuple[Settings, Engine], tmp_path: Path
) -> None:
    mariadb = private_services.mariadb

    def fault() -> float:
        mariadb.kill()  # SIGKILL: crash recovery on the way back
        time.sleep(OUTAGE)
        mariadb.start()
        return time.time()

    survive("mariadb SIGKILL/restart", *fault_settings, tmp_path, fault)
