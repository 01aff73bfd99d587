"""The image and ``docker/compose.host.yml`` for real: a cluster of containers on this machine.

A private Docker engine (tests/docker/engine.py) builds the image on the local debootstrap base,
``docker-compose`` starts migrate, the API, two schedulers and two workers against the host's
MariaDB, Redis and RabbitMQ (a database and namespace of this test's own), the seed job is
created through the API, and then the leading scheduler's container and a worker's container are
SIGKILLed (``docker kill``). Every fire must still be made once and executed once.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, select, text

from tests.conftest import (
    AMQP_URL,
    MYSQL_SERVER_URL,
    REDIS_URL,
    ROOT,
    RUN_ID,
    SEED,
    TEST_AUTH_SECRET,
    cleanup_namespace,
    require_service,
)
from tests.docker.engine import DockerEngine, container_health
from tests.http_target import Target, http_target
from tests.worker_helpers import wait_for
from tickwork.config import load_settings
from tickwork.middleware.heartbeat import WORKER_LOST
from tickwork.store.engine import make_engine
from tickwork.store.models import runs_table

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

COMPOSE_FILE = "docker/compose.host.yml"
SCHEDULERS = ("scheduler-1", "scheduler-2")
WORKERS = ("worker-1", "worker-2")
HANDLER_SECONDS = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> str | None:
    """The exposition text, or None while the process is not serving (yet, or any more)."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def sample(exposition: str | None, name: str, **labels: str) -> float:
    """The value of one sample, or 0 when it is absent."""
    for line in (exposition or "").splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


@dataclass
class Cluster:
    engine: DockerEngine
    project: str
    env: dict[str, str]
    api_port: int
    metrics_ports: dict[str, int]
    db: Engine
    started: float = field(default_factory=time.monotonic)
    containers: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 300) -> str:
        argv = ["docker-compose", "-p", self.project, "-f", COMPOSE_FILE, *args]
        return self.engine.run(argv, timeout=timeout, extra_env=self.env).stdout

    def container(self, service: str) -> str:
        """The container id of a service (looked up once: each docker-compose call costs ~1 s)."""
        if service not in self.containers:
            self.containers[service] = self.compose("ps", "-q", service).strip()
        return self.containers[service]

    def mark(self, phase: str) -> None:
        """Note when a phase ended, in seconds since the cluster was started."""
        self.phases[phase] = round(time.monotonic() - self.started, 1)

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    def leader(self) -> str | None:
        """The scheduler service whose /metrics says it holds the lease."""
        leading = [
            s for s in SCHEDULERS if sample(scrape(self.metrics_ports[s]), "tickwork_scheduler_is_leader")
        ]
        return leading[0] if len(leading) == 1 else None

    def runs(self, job_id: int) -> list[Any]:
        with self.db.connect() as conn:
            return list(
                conn.execute(
                    select(runs_table)
                    .where(runs_table.c.job_id == job_id)
                    .order_by(runs_table.c.scheduled_for, runs_table.c.attempt)
                )
            )


@pytest.fixture
def cluster(docker_engine: DockerEngine, tickwork_image: str) -> Iterator[Cluster]:
    require_service("MariaDB", "127.0.0.1", 3306)
    require_service("Redis", "127.0.0.1", 6379)
    require_service("RabbitMQ", "127.0.0.1", 5672)
    database = f"tickwork_docker_{RUN_ID}"
    namespace = f"twdocker_{RUN_ID}"
    server = create_engine(MYSQL_SERVER_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4"))
    database_url = f"{MYSQL_SERVER_URL}/{database}"
    ports = {name: free_port() for name in (*SCHEDULERS, *WORKERS)}
    api_port = free_port()
    env = {
        "TICKWORK_IMAGE": tickwork_image,
        "TICKWORK_DATABASE_URL": database_url,
        "TICKWORK_BROKER_URL": AMQP_URL,
        "TICKWORK_REDIS_URL": REDIS_URL,
        "TICKWORK_NAMESPACE": namespace,
        "TICKWORK_AUTH_SECRET": TEST_AUTH_SECRET,
        "TICKWORK_API_PORT": str(api_port),
        **{
            f"TICKWORK_{name.upper().replace('-', '_')}_METRICS_PORT": str(port)
            for name, port in ports.items()
        },
    }
    db = make_engine(database_url)
    cluster = Cluster(docker_engine, f"twdocker{RUN_ID}", env, api_port, ports, db)
    try:
        cluster.compose("up", "-d", "--no-build", timeout=600)
        cluster.mark("compose_up")
        yield cluster
    finally:
        try:
            # The containers' logs outlive them, for a failure's post-mortem.
            logs = ROOT / "results" / "docker" / "compose.log"
            logs.write_text(cluster.compose("logs", "--no-color", "--timestamps", timeout=120))
            cluster.compose("down", "--remove-orphans", "--timeout", "20", timeout=300)
        finally:
            db.dispose()
            with server.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
            server.dispose()
            cleanup_namespace(
                load_settings(
                    database_url=database_url,
                    broker_url=AMQP_URL,
                    redis_url=REDIS_URL,
                    namespace=namespace,
                    auth_secret=TEST_AUTH_SECRET,
                )
            )


def successes_after(cluster: Cluster, job_id: int, instant: datetime) -> int:
    return sum(1 for r in cluster.runs(job_id) if r.status == "SUCCESS" and _utc(r.scheduled_for) > instant)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_cluster_in_containers_survives_killed_leader_and_worker(cluster: Cluster) -> None:
    # Each request takes 2 s, so a worker always has attempts in flight when it is killed.
    with http_target(delay=HANDLER_SECONDS) as target:
        _exercise(cluster, target)


def api_healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _exercise(cluster: Cluster, target: Target) -> None:
    # Up: the API answers, every scheduler and worker serves /metrics, one scheduler leads.
    wait_for(lambda: api_healthy(cluster.api_port), 180, 0.5, "the API container's /healthz")
    for service, port in cluster.metrics_ports.items():
        wait_for(lambda port=port: scrape(port) is not None, 180, 0.5, f"{service}'s /metrics")
    wait_for(cluster.leader, 60, 0.5, "one scheduler container to lead")
    cluster.mark("serving")

    # The spec's job through the API, with a token from the image's own CLI; fired every second.
    token = cluster.compose("exec", "-T", "api", "tickwork", "token", "--role", "admin").strip()
    body = {**SEED, "cronExpression": "* * * * * *", "handlerData": f"{target.url}/post"}
    with cluster.api(token) as api:
        created = api.post("/jobs", json=body)
        assert created.status_code == 201, created.text
        job = created.json()
        assert {k: job[k] for k in body} == body
        assert job["id"] and job["createdAt"] and job["updatedAt"]
        job_id = int(job["id"])
        wait_for(
            lambda: successes_after(cluster, job_id, datetime.min.replace(tzinfo=UTC)) >= 3,
            120,
            0.5,
            "three successful runs",
        )
        cluster.mark("first_successes")
        runs_page = api.get(f"/jobs/{job_id}/runs").json()
        assert any(r["status"] == "SUCCESS" and r["output"] for r in runs_page["items"]), runs_page

        # Every container answers its /metrics before anything is killed.
        assert "tickwork_" in httpx.get(f"http://127.0.0.1:{cluster.api_port}/metrics", timeout=10).text
        for service, port in cluster.metrics_ports.items():
            assert scrape(port) is not None, service
        for service in SCHEDULERS:
            assert "tickwork_scheduler_is_leader" in (scrape(cluster.metrics_ports[service]) or ""), service
        for service in ("api", *SCHEDULERS, *WORKERS):
            wait_for(
                lambda service=service: (
                    container_health(cluster.engine, cluster.container(service)) == "healthy"
                ),
                120,
                1.0,
                f"{service}'s HEALTHCHECK to pass",
            )
        cluster.mark("healthy")

        # SIGKILL the leading scheduler's container and worker-1's while it runs an attempt.
        first_leader = wait_for(cluster.leader, 60, 0.5, "one scheduler container to lead")
        survivor = next(s for s in SCHEDULERS if s != first_leader)
        wait_for(
            lambda: sample(scrape(cluster.metrics_ports["worker-1"]), "tickwork_attempts_in_progress") >= 1,
            60,
            0.1,
            "worker-1 to run an attempt",
        )
        cluster.mark("worker_1_busy")
        killed = datetime.now(UTC)
        cluster.engine.docker("kill", cluster.container(first_leader), cluster.container("worker-1"))
        wait_for(lambda: cluster.leader() == survivor, 60, 0.2, f"{survivor} to take the lease over")
        takeover_seconds = (datetime.now(UTC) - killed).total_seconds()
        cluster.mark("lease_taken_over")
        after = wait_for(
            lambda: successes_after(cluster, job_id, killed + timedelta(seconds=2)) >= 10,
            120,
            0.5,
            "ten successful fires after the kill",
        )
        cluster.mark("fires_after_kill")
        assert after
        assert sample(scrape(cluster.metrics_ports[survivor]), "tickwork_fires_total", outcome="fired") >= 10
        assert (
            sample(
                scrape(cluster.metrics_ports["worker-2"]),
                "tickwork_runs_total",
                job_name="test-http",
                status="SUCCESS",
            )
            >= 1
        )

        # Stop firing, let every attempt settle (a lost one is retried once its heartbeat expires).
        assert api.post(f"/jobs/{job_id}/pause").status_code == 200
        wait_for(
            lambda: all(r.status not in ("PENDING", "RUNNING") for r in cluster.runs(job_id)),
            180,
            1.0,
            "every attempt to finish",
        )
        cluster.mark("settled")

    rows = cluster.runs(job_id)
    first_attempts = [r for r in rows if r.attempt == 1]
    instants = [_utc(r.scheduled_for) for r in first_attempts]
    # One row per second from the first fire to the last: nothing fired twice, nothing dropped.
    assert len(instants) == len(set(instants))
    span = int((instants[-1] - instants[0]).total_seconds()) + 1
    assert len(instants) == span, sorted(
        set(range(span)) - {int((i - instants[0]).total_seconds()) for i in instants}
    )
    # Each fire made executed once: one SUCCESS per fire; the only failures are lost workers.
    fired = {_utc(r.scheduled_for) for r in first_attempts if r.status not in ("MISSED", "SKIPPED")}
    succeeded = [_utc(r.scheduled_for) for r in rows if r.status == "SUCCESS"]
    assert sorted(succeeded) == sorted(fired)
    failures = [r for r in rows if r.status not in ("SUCCESS", "MISSED", "SKIPPED")]
    assert all(r.status == "FAILED" and r.error == WORKER_LOST for r in failures), [
        (r.status, r.error) for r in failures
    ]
    assert failures, "worker-1 was killed with an attempt in flight: it must be failed as worker lost"
    # The target saw each success once, plus at most the requests of attempts whose worker died.
    assert len(succeeded) <= target.count() <= len(succeeded) + len(failures)
    summary = {
        "fires": len(instants),
        "fired": len(fired),
        "missed_or_skipped": len(instants) - len(fired),
        "successes": len(succeeded),
        "worker_lost_attempts": len(failures),
        "target_requests": target.count(),
        "takeover_seconds": round(takeover_seconds, 1),
        "phases_seconds": cluster.phases,
    }
    (ROOT / "results" / "docker" / "cluster.json").write_text(json.dumps(summary, indent=2) + "\n")
