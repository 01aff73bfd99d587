"""Fixtures of the fault tests: private MariaDB, Redis and RabbitMQ servers (tests/private_services.py).

The servers are started once per module and are stopped, killed and restarted by the tests;
the machine's shared servers are never touched. After every test each private server is
running again (whatever the test did), so the next test starts on healthy services.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.conftest import IN_CI, RUN_ID
from tests.fault_cluster import cluster_settings_for
from tests.private_services import PrivateMariaDB, PrivateRabbitMQ, PrivateRedis, available
from tickwork.config import Settings
from tickwork.store.engine import make_engine


@dataclass
class PrivateServices:
    mariadb: PrivateMariaDB
    redis: PrivateRedis
    rabbitmq: PrivateRabbitMQ

    def ensure_running(self) -> None:
        self.mariadb.start()
        self.redis.start()
        self.rabbitmq.ensure_running()


@pytest.fixture(scope="module")
def private_services() -> Iterator[PrivateServices]:
    """MariaDB, Redis and RabbitMQ of this module's own, on free ports."""
    missing = available()
    if missing:
        if IN_CI:
            pytest.fail(f"private services for the fault tests: {missing}", pytrace=False)
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix=f"tickwork-private-{RUN_ID}-"))
    started: list[PrivateMariaDB | PrivateRedis | PrivateRabbitMQ] = []
    try:
        mariadb = PrivateMariaDB(root / "mariadb")
        started.append(mariadb)
        redis = PrivateRedis(root / "redis")
        started.append(redis)
        rabbitmq = PrivateRabbitMQ(root / "rabbitmq")
        started.append(rabbitmq)
        for server in started:
            server.start()
        yield PrivateServices(mariadb, redis, rabbitmq)
    finally:
        for server in started:
            server.close()


@pytest.fixture
def fault_settings(private_services: PrivateServices) -> Iterator[tuple[Settings, Engine]]:
    """Settings and an engine on a fresh database and namespace on the private services."""
    private_services.ensure_running()
    name = f"tickwork_fault_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = private_services.mariadb.create_database(name)
    settings = cluster_settings_for(url, private_services.redis.url, private_services.rabbitmq.url, name)
    engine = make_engine(url)
    try:
        yield settings, engine
    finally:
        engine.dispose()
        private_services.ensure_running()
