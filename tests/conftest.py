"""Shared fixtures: real services (MariaDB, Redis, RabbitMQ) with per-run names.

A missing service skips a test on a laptop but fails it under CI (``CI`` set), so a missing
service can never pass silently. Each test session uses its own MariaDB database, and each
test its own namespace (queue names, Redis keys), so a test run never touches a live tickwork.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tickwork.config import Settings, load_settings
from tickwork.store.engine import make_engine, upgrade

ROOT = Path(__file__).resolve().parents[1]
MYSQL_SERVER_URL = os.environ.get("TICKWORK_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
REDIS_URL = os.environ.get("TICKWORK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TICKWORK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
IN_CI = bool(os.environ.get("CI"))
#: The seed API's job, exactly as docs/design.md shows it (the host is the quick start's target).
SEED: dict[str, Any] = {
    "name": "test-http",
    "cronExpression": "0 */1 * * * *",
    "handlerType": "http",
    "handlerData": "http://127.0.0.1:8080/post",
    "retryCount": 3,
    "retryBackoffSeconds": 10,
}
RUN_ID = uuid.uuid4().hex[:8]
#: Distributed mode needs a secret of its own (the API and `tickwork token` refuse to start without).
TEST_AUTH_SECRET = "tickwork-test-secret-0123456789abcdef"  # 32+ bytes: PyJWT warns below


@pytest.fixture(scope="session")
def httpbin_url() -> Iterator[str]:
    """httpbin (PyPI ``httpbin``, the spec's target) served on a free loopback port by Werkzeug.

    The seed job's ``http://httpbin.org/post`` becomes ``f"{httpbin_url}/post"``.
    """
    from werkzeug.serving import make_server

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # httpbin 0.10.0 imports deprecated Werkzeug helpers
        import httpbin

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        # httpbin 0.10.0's /bytes/N answers a bytearray, which WSGI servers refuse.
        return [bytes(chunk) for chunk in httpbin.app(environ, start_response)]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="httpbin", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _port_open(host, port):
        return
    message = f"{name} is not reachable on {host}:{port} (scripts/test.sh starts it)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mysql_database() -> Iterator[str]:
    """A migrated MariaDB database of this test session's own; dropped afterwards."""
    require_service("MariaDB", "127.0.0.1", 3306)
    name = f"tickwork_test_{RUN_ID}"
    server = create_engine(MYSQL_SERVER_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = f"{MYSQL_SERVER_URL}/{name}"
    upgrade(url)
    yield url
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    server.dispose()


@pytest.fixture
def mysql_engine(mysql_database: str) -> Iterator[Engine]:
    """The session database, emptied before the test."""
    engine = make_engine(mysql_database)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM trigger_keys"))
        conn.execute(text("DELETE FROM job_runs"))
        conn.execute(text("DELETE FROM jobs"))
        conn.execute(text("DELETE FROM events"))
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def namespace() -> str:
    """Unique prefix for this test's queues and Redis keys."""
    return f"twtest_{RUN_ID}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def amqp_url() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return AMQP_URL


@pytest.fixture
def cluster_settings(
    mysql_database: str, mysql_engine: Engine, redis_url: str, amqp_url: str, namespace: str
) -> Iterator[Settings]:
    """Distributed-mode settings on the real services, with this test's namespace."""
    settings = load_settings(
        database_url=mysql_database,
        broker_url=amqp_url,
        redis_url=redis_url,
        namespace=namespace,
        auth_secret=TEST_AUTH_SECRET,
    )
    yield settings
    cleanup_namespace(settings)


def settings_env(settings: Settings, **extra: Any) -> dict[str, str]:
    """Environment for a subprocess (``python -m tickwork ...``) with these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TICKWORK_DATABASE_URL"] = settings.database_url
    env["TICKWORK_BROKER_URL"] = settings.broker_url
    env["TICKWORK_REDIS_URL"] = settings.redis_url or ""
    env["TICKWORK_NAMESPACE"] = settings.namespace
    env["TICKWORK_AUTH_SECRET"] = settings.auth_secret
    for key, value in extra.items():
        env[f"TICKWORK_{key.upper()}"] = str(value)
    return env


def tickwork_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tickwork", *args]


def cleanup_namespace(settings: Settings) -> None:
    """Delete this test's queues and Redis keys (best effort: the names are unique anyway)."""
    if settings.redis_url:
        try:
            import redis

            client = redis.Redis.from_url(settings.redis_url)
            keys = list(client.scan_iter(f"{settings.namespace}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
        except Exception:
            pass
    if not settings.embedded_broker:
        try:
            import pika

            conn = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
            channel = conn.channel()
            for suffix in ("", ".DQ", ".XQ"):
                for queue in _declared_queue_guesses(settings):
                    try:
                        channel.queue_delete(queue + suffix)
                    except Exception:
                        channel = conn.channel()
            conn.close()
        except Exception:
            pass


def _declared_queue_guesses(settings: Settings) -> list[str]:
    from tickwork.messaging import dlq_name, queue_name

    return [queue_name(settings, q) for q in ("default", "slow", "fast", "other")] + [dlq_name(settings)]
