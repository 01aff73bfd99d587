"""The embedded mode in one process: SQLite, the in-process broker, scheduler and worker threads."""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from tests.http_target import Target, http_target
from tickwork.api.auth import create_token
from tickwork.config import Settings, load_settings
from tickwork.config.settings import PUBLISHED_AUTH_SECRET, resolve_auth_secret
from tickwork.embedded import Embedded, build, listen_socket, run_embedded
from tickwork.errors import ConfigError, TickworkError, ValidationError
from tickwork.middleware.heartbeat import current_worker_id
from tickwork.spec import JobSpec
from tickwork.store.engine import current_revision, head_revision, make_engine, upgrade
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
        headers = {"Authorization": f"Bearer {create_token(resolve_auth_secret(settings), 'admin')}"}
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
        headers = {"Authorization": f"Bearer {create_token(resolve_auth_secret(settings), 'viewer')}"}
        with TestClient(parts.app) as client:
            jobs = client.get("/jobs?limit=500", headers=headers).json()["items"]
            # @job functions other tests imported register themselves too (source "decorator").
            assert [j["name"] for j in jobs if j["source"] == "api"] == ["on-demand"]
    finally:
        parts.stop()
        parts.engine.dispose()


def test_cluster_view_reports_the_in_process_leader_scheduler_and_worker(settings: Settings) -> None:
    parts = started(settings)
    try:
        headers = {"Authorization": f"Bearer {create_token(resolve_auth_secret(settings), 'viewer')}"}
        with TestClient(parts.app) as client:
            deadline = time.monotonic() + 20
            while True:
                view = client.get("/cluster", headers=headers).json()
                if view["leader"] is not None and view["workers"]:
                    break
                assert time.monotonic() < deadline, view
                time.sleep(0.1)
        assert view["mode"] == "embedded" and view["redis"] == "not configured"
        node = parts.scheduler.node_id
        assert view["leader"]["nodeId"] == node
        assert 0 < view["leader"]["ttlMs"] <= settings.leader_ttl_ms
        [scheduler] = view["schedulers"]
        assert scheduler["nodeId"] == node and scheduler["leader"] is True
        assert scheduler["pid"] == os.getpid()
        [worker] = view["workers"]
        assert worker["workerId"] == current_worker_id() and worker["pid"] == os.getpid()
        assert 0 < worker["ttlSeconds"] <= settings.heartbeat_ttl_seconds
    finally:
        parts.stop()
        parts.engine.dispose()


def test_dev_signs_tokens_with_a_random_secret_kept_next_to_the_sqlite_file(settings: Settings) -> None:
    assert settings.auth_secret == ""  # no built-in secret
    resolved = resolve_auth_secret(settings)
    path = Path(str(make_url(settings.database_url).database) + ".secret")
    assert resolved.auth_secret != PUBLISHED_AUTH_SECRET and len(resolved.auth_secret) >= 32
    assert path.read_text().strip() == resolved.auth_secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The same secret after a restart and for `tickwork token`: earlier tokens stay valid.
    assert resolve_auth_secret(settings).auth_secret == resolved.auth_secret
    token = create_token(resolved, "admin")
    parts = build(resolve_auth_secret(settings), engine=make_engine(settings), worker_threads=1)
    try:
        with TestClient(parts.app) as client:
            assert client.get("/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
            forged = jwt.encode(  # signed with the development secret earlier versions published
                {"sub": "x", "role": "admin", "exp": int(time.time()) + 60}, PUBLISHED_AUTH_SECRET
            )
            assert client.get("/jobs", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    finally:
        parts.engine.dispose()
    # A secret of your own wins and writes nothing.
    own = settings.model_copy(update={"auth_secret": "my-own-secret-of-32-characters!!"})
    path.unlink()
    assert resolve_auth_secret(own) == own and not path.exists()


def test_the_dev_command_refuses_the_built_in_secret_on_a_shared_database(settings: Settings) -> None:
    shared = settings.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:1/%2F"})
    with pytest.raises(ConfigError) as refused:
        run_embedded(shared, host="127.0.0.1", port=0)
    assert refused.value.field == "TICKWORK_AUTH_SECRET"
    with pytest.raises(ConfigError):
        build(shared, engine=make_engine(settings))


# --- `tickwork dev`'s port checks and migrations ---------------------------------------------


@pytest.mark.parametrize("port", [-1, 65536, 99999])
def test_a_port_out_of_range_is_bad_input(port: int) -> None:
    with pytest.raises(ValidationError) as caught:
        listen_socket("127.0.0.1", port)
    assert (caught.value.field, caught.value.reason) == (
        "--port",
        f"{port} is out of range: must be a port number from 0 to 65535",
    )


def test_a_busy_port_is_a_conflict_not_bad_input() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(TickworkError) as caught:
            listen_socket("127.0.0.1", port)
    assert not isinstance(caught.value, ValidationError)  # exit 1, not 2
    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{port} (--port or TICKWORK_API_PORT): Address already in use"
    )


@pytest.mark.parametrize(
    ("host", "reason"),
    [("nosuchhost.invalid", "cannot resolve 'nosuchhost.invalid'"), ("192.0.2.1", "not an address of this")],
)
def test_a_host_that_is_not_here_is_bad_input(host: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        listen_socket(host, 0)
    assert caught.value.field == "--host" and reason in caught.value.reason


def test_port_0_listens_on_a_free_port() -> None:
    with listen_socket("127.0.0.1", 0) as sock:
        assert sock.getsockname()[1] > 0


class _Stop(Exception):
    """Raised where run_embedded checks the schema: the test has seen what it needs."""


@pytest.mark.parametrize(
    ("database", "migrate", "migrated"),
    [
        ("sqlite", None, True),  # the default: `tickwork dev` migrates its own SQLite file
        ("sqlite", False, False),  # --no-migrate
        ("mysql", None, False),  # a shared database is migrated by `tickwork db upgrade` only
        ("mysql", True, True),  # ... or by --migrate
    ],
)
def test_dev_migrates_a_sqlite_file_by_default_and_mysql_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str, migrate: bool | None, migrated: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}" if database == "sqlite" else "mysql+pymysql://u@127.0.0.1:1/db"
    settings = load_settings(database_url=url, auth_secret="s" * 32)
    upgrades: list[str] = []
    monkeypatch.setattr("tickwork.embedded.upgrade", lambda s: upgrades.append(s.database_url))

    def check(_engine: object) -> None:
        raise _Stop

    monkeypatch.setattr("tickwork.embedded.ensure_migrated", check)
    with pytest.raises(_Stop):
        run_embedded(settings, host="127.0.0.1", port=0, migrate=migrate)
    assert upgrades == ([url] if migrated else [])


def test_dev_on_a_fresh_sqlite_file_migrates_it_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    settings = load_settings(database_url=url, broker_url="memory://", redis_url="")

    def stop_here(*_args: object, **_kwargs: object) -> None:
        raise _Stop  # just before the parts start

    monkeypatch.setattr("tickwork.embedded.build", stop_here)
    with pytest.raises(_Stop):
        run_embedded(settings, host="127.0.0.1", port=0)
    engine = make_engine(url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_embedded_mode_auto_pauses_and_delivers_a_signed_webhook(tmp_path: Path) -> None:
    """Issue 13 in `tickwork dev` (SQLite, in-process broker): the same hook, sweep and delivery."""
    from tests.webhook_receiver import Switchable
    from tickwork.alerts import verify

    failing, receiver = Switchable(status=500).start(), Switchable().start()
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    upgrade(url)
    settings = load_settings(
        database_url=url,
        broker_url="memory://",
        redis_url="",
        namespace="twembedalerts",
        notify_url=receiver.url,
        notify_secret="embedded-secret-123",
    )
    parts = started(settings)
    try:
        spec = JobSpec.model_validate(
            {
                "name": "fails",
                "cronExpression": "* * * * * *",
                "handlerType": "http",
                "handlerData": failing.url,
                "pauseAfterFailures": 2,
            }
        )
        job_id = create_job(parts.engine, spec).id
        deadline = time.monotonic() + 60
        while not receiver.events("job.paused"):
            assert time.monotonic() < deadline, "no job.paused webhook"
            time.sleep(0.2)
        hook = receiver.events("job.paused")[0]
        assert verify(hook.body, "embedded-secret-123", hook.headers["x-tickwork-signature"])
        assert hook.json["job"] == {
            "id": job_id,
            "name": "fails",
            "enabled": False,
            "pausedReason": "auto: 2 consecutive dead runs",
            "lateAfterSeconds": None,
            "pauseAfterFailures": 2,
        }
    finally:
        parts.stop()
        parts.engine.dispose()
        failing.stop()
        receiver.stop()
