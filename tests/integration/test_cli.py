"""The ``tickwork`` command in subprocesses against the session's MariaDB (and RabbitMQ)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from sqlalchemy import Engine

from tests.conftest import settings_env, tickwork_cmd
from tickwork.config import Settings
from tickwork.store.models import RunStatus
from tickwork.store.runs import get_run, insert_run

pytestmark = pytest.mark.integration
TIMEOUT = 60


def run(settings: Settings, *args: str, **extra: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tickwork_cmd(*args),
        env=settings_env(settings, **extra),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def ok(settings: Settings, *args: str) -> str:
    result = run(settings, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_jobs_lifecycle_with_tables_and_json(cluster_settings: Settings, mysql_engine: Engine) -> None:
    s = cluster_settings
    created = json.loads(
        ok(
            s,
            "jobs",
            "add",
            "--name",
            "cli-job",
            "--cron",
            "0 */1 * * * *",
            "--http",
            "http://127.0.0.1:8080/post",
            "--retry-count",
            "3",
            "--json",
        )
    )
    assert created["cronExpression"] == "0 */1 * * * *" and created["retryCount"] == 3
    assert created["source"] == "cli"

    table = ok(s, "jobs", "list")
    header, row = table.splitlines()[:2]
    assert header.split()[:3] == ["ID", "NAME", "SCHEDULE"]
    assert "cli-job" in row and "0 */1 * * * *" in row

    listed = json.loads(ok(s, "jobs", "list", "--json"))
    assert listed["total"] == 1 and listed["items"][0]["id"] == created["id"]

    shown = ok(s, "jobs", "show", "cli-job")
    assert "next fires (UTC):" in shown
    assert json.loads(ok(s, "jobs", "pause", str(created["id"]), "--json"))["enabled"] is False
    assert "paused" in ok(s, "jobs", "list")
    assert "resumed" in ok(s, "jobs", "resume", "cli-job")

    triggered = json.loads(ok(s, "jobs", "trigger", "cli-job", "--json"))
    assert triggered["status"] == "PENDING" and triggered["enqueuedAt"] is not None

    runs = ok(s, "runs", "list", "--job", "cli-job")
    assert "PENDING" in runs and "manual" in runs
    assert json.loads(ok(s, "runs", "show", str(triggered["id"]), "--json"))["jobId"] == created["id"]
    assert json.loads(ok(s, "runs", "list", "--status", "success", "--json"))["items"] == []

    assert "deleted job" in ok(s, "jobs", "delete", "cli-job")
    missing = run(s, "jobs", "show", "cli-job")
    assert missing.returncode == 1 and "not found" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cron", "99 * * * * *", "--http", "http://127.0.0.1/x"],
            "invalid --cron (cronExpression): second",
        ),
        (["--http", "ftp://127.0.0.1/x"], "invalid --http/--python (handlerData): must be an http"),
        (["--http", "http://169.254.169.254/x"], "denied network"),
        (["--python", "nowhere"], "no @job function named 'nowhere'"),
        (["--http", "http://x/", "--timezone", "Mars/Base"], "invalid --timezone (timezone): unknown"),
        (["--http", "http://x/", "--retry-count", "-1"], "invalid --retry-count (retryCount)"),
        (["--http", "http://x/", "--parameters", "{oops"], "invalid --parameters: not valid JSON"),
        (["--http", "http://x/", "--retry-count", "many"], "invalid int value"),
    ],
)
def test_bad_input_exits_2_with_field_and_reason(
    cluster_settings: Settings, mysql_engine: Engine, args: list[str], message: str
) -> None:
    result = run(cluster_settings, "jobs", "add", "--name", "bad", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert json.loads(ok(cluster_settings, "jobs", "list", "--json"))["total"] == 0


def test_duplicate_name_exits_1(cluster_settings: Settings, mysql_engine: Engine) -> None:
    ok(cluster_settings, "jobs", "add", "--name", "twice", "--http", "http://127.0.0.1/x")
    again = run(cluster_settings, "jobs", "add", "--name", "twice", "--http", "http://127.0.0.1/x")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_dlq_list_replay_purge(cluster_settings: Settings, mysql_engine: Engine) -> None:
    s = cluster_settings
    job = json.loads(ok(s, "jobs", "add", "--name", "dlq-job", "--http", "http://127.0.0.1/x", "--json"))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    dead = insert_run(
        mysql_engine, job_id=job["id"], scheduled_for=when, status=RunStatus.DEAD, error="HTTP 503"
    )
    other = insert_run(mysql_engine, job_id=job["id"], scheduled_for=when, attempt=2, status=RunStatus.DEAD)
    listing = ok(s, "dlq", "list")
    assert "HTTP 503" in listing and str(dead) in listing
    replayed = json.loads(ok(s, "dlq", "replay", str(dead), "--json"))["items"][0]
    assert replayed["trigger"] == "replay" and replayed["attempt"] == 3
    assert get_run(mysql_engine, dead).status == RunStatus.REPLAYED.value
    again = run(s, "dlq", "replay", str(dead))
    assert again.returncode == 1 and "not DEAD" in again.stderr
    nothing = run(s, "dlq", "purge")
    assert nothing.returncode == 2 and "--all" in nothing.stderr
    assert json.loads(ok(s, "dlq", "purge", "--all", "--json")) == {"purged": 1}
    assert get_run(mysql_engine, other).status == RunStatus.DISCARDED.value


def test_token_prints_a_signed_token(cluster_settings: Settings) -> None:
    token = ok(cluster_settings, "token", "--role", "admin", "--ttl", "120").strip()
    claims = jwt.decode(token, cluster_settings.auth_secret, algorithms=["HS256"])
    assert claims["role"] == "admin" and claims["exp"] - claims["iat"] == 120
    bad = run(cluster_settings, "token", "--role", "root")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    zero = run(cluster_settings, "token", "--role", "viewer", "--ttl", "0")
    assert zero.returncode == 2 and "invalid ttl" in zero.stderr


def test_commands_refuse_an_unmigrated_database(tmp_path: Path, cluster_settings: Settings) -> None:
    empty = cluster_settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'empty.db'}"})
    for args in (["jobs", "list"], ["runs", "list"], ["dlq", "list"], ["api"], ["dev"]):
        result = run(empty, *args)
        assert result.returncode == 1, args
        assert "tickwork db upgrade" in result.stderr, args


@pytest.mark.parametrize("command", [["scheduler"], ["worker", "--processes", "1"]])
def test_a_bad_imports_setting_names_the_variable(cluster_settings: Settings, command: list[str]) -> None:
    result = run(cluster_settings, *command, imports="tests.no_such_module")
    assert result.returncode == 2, result.stderr
    assert "invalid TICKWORK_IMPORTS: cannot import 'tests.no_such_module'" in result.stderr
    assert "Traceback" not in result.stderr


def test_scheduler_registers_the_job_definitions_it_imports(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    proc = subprocess.Popen(
        tickwork_cmd("scheduler"),
        env=settings_env(cluster_settings, imports="tests.worker_jobs"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        while not any("running" in line for line in lines) and proc.poll() is None:
            lines.append(proc.stdout.readline())  # "... running" comes after registration
        assert any("running" in line for line in lines), lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    from tickwork.store.jobs import get_job_by_name

    job = get_job_by_name(mysql_engine, "tw_record")
    assert (job.source, job.handler_type, job.handler_data) == ("decorator", "python", "tw_record")
