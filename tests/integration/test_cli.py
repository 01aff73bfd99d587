"""The ``tickwork`` command in subprocesses against the session's MariaDB (and RabbitMQ)."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy import Engine, create_engine, text

from tests.conftest import MYSQL_SERVER_URL, settings_env, tickwork_cmd
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


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command's stderr, asserted to be one line and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


HUGE = "99999999999999999999999"

#: Bad input for every command: (arguments, what stderr says). Each exits 2 with one line.
BAD_INPUT = [
    (["dev", "--port", "99999"], "argument --port: 99999 is out of range: must be a port number from 0"),
    (["dev", "--port", "-1"], "argument --port: -1 is out of range"),
    (["dev", "--port", "http"], "argument --port: 'http' is not a port number"),
    (["dev", "--host", "nosuchhost.invalid", "--port", "0"], "invalid --host: cannot resolve"),
    (["dev", "--migrate", "--no-migrate", "--frob"], "unrecognized arguments: --frob"),
    (["api", "--port", "99999"], "argument --port: 99999 is out of range"),
    (["api", "--port", "65536"], "argument --port: 65536 is out of range"),
    (["api", "--host", "nosuchhost.invalid", "--port", "0"], "invalid --host: cannot resolve"),
    (["scheduler", "--node-id", ""], "argument --node-id: '' is not a node id"),
    (["scheduler", "--node-id", "a b"], "argument --node-id: 'a b' is not a node id"),
    (["worker", "--processes", "0"], "invalid --processes: must be between 1 and 256"),
    (["worker", "--processes", "-3"], "invalid --processes: must be between 1 and 256"),
    (["worker", "--threads", "100000"], "invalid --threads: must be between 1 and 1024"),
    (["worker", "--shutdown-timeout", "nan"], "invalid --shutdown-timeout: must be above 0"),
    (["worker", "--shutdown-timeout", "-1"], "invalid --shutdown-timeout: must be above 0"),
    (["worker", "--queues", "bad queue"], "invalid --queues: 'bad queue' is not a queue name"),
    (["db", "upgrade", "nosuchrev"], "invalid revision: Can't locate revision identified by 'nosuchrev'"),
    (["db", "upgrade", ""], "argument revision: give a migration revision"),
    (["db", "downgrade"], "argument ACTION: invalid choice: 'downgrade'"),
    (["token", "--role", "root"], "argument --role: invalid choice: 'root'"),
    (["token", "--ttl", "0"], "argument --ttl: 0 is out of range"),
    (["token", "--ttl", "-60"], "argument --ttl: -60 is out of range"),
    (["token", "--ttl", "99999999999"], "argument --ttl: 99999999999 is out of range"),
    (["token", "--ttl", "soon"], "argument --ttl: 'soon' is not a number of seconds"),
    (["token", "--subject", ""], "argument --subject: must not be empty"),
    (["jobs", "add", "--name", "x"], "one of the arguments --http --python is required"),
    (["jobs", "list", "--limit", "0"], "argument --limit: 0 is out of range: must be a row count from 1"),
    (["jobs", "list", "--limit", HUGE], f"argument --limit: {HUGE} is out of range"),
    (["jobs", "list", "--offset", "-1"], "argument --offset: -1 is out of range"),
    (["jobs", "list", "--offset", HUGE], f"argument --offset: {HUGE} is out of range"),
    (["jobs", "list", "--enabled", "--paused"], "argument --paused: not allowed with argument --enabled"),
    (["jobs", "show", ""], "argument job: give a job id or name"),
    (["jobs", "show", HUGE], f"argument job: {HUGE} is out of range for a job id"),
    (["jobs", "pause", "0"], "argument job: 0 is out of range for a job id"),
    (["jobs", "resume", HUGE], f"argument job: {HUGE} is out of range for a job id"),
    (["jobs", "trigger", " "], "argument job: give a job id or name"),
    (["jobs", "delete"], "the following arguments are required: job"),
    (["jobs", "frob"], "argument ACTION: invalid choice: 'frob'"),
    (["runs", "list", "--since", "yesterday"], "argument --since: 'yesterday' is not an ISO 8601 date-time"),
    (["runs", "list", "--since", "2026-13-01"], "argument --since: '2026-13-01' is not an ISO 8601"),
    (["runs", "list", "--since", "9999-12-31T23:59:59-05:00"], "is not an ISO 8601 date-time in range"),
    (["runs", "list", "--status", "bogus"], "argument --status: invalid choice: 'BOGUS'"),
    (["runs", "list", "--limit", "-1"], "argument --limit: -1 is out of range"),
    (["runs", "list", "--limit", "10001"], "argument --limit: 10001 is out of range"),
    (["runs", "list", "--job", "0"], "argument --job: 0 is out of range for a job id"),
    (["runs", "show", "-1"], "argument run_id: -1 is out of range: must be a run id from 1 up"),
    (["runs", "show", "abc"], "argument run_id: 'abc' is not a run id"),
    (["runs", "show", HUGE], f"argument run_id: {HUGE} is out of range"),
    (["dlq", "list", "--limit", "0"], "argument --limit: 0 is out of range"),
    (["dlq", "replay"], "the following arguments are required: run_id"),
    (["dlq", "replay", "0"], "argument run_id: 0 is out of range"),
    (["dlq", "replay", "7", "x7"], "argument run_id: 'x7' is not a run id"),
    (["dlq", "purge", "-5"], "argument run_id: -5 is out of range"),
    (["dlq", "purge", HUGE], f"argument run_id: {HUGE} is out of range"),
    (["dlq", "purge"], "invalid run_id: give the dead runs to discard, or --all"),
    (["dlq", "purge", "1", "--all"], "invalid --all: give run ids or --all, not both"),
    ([], "the following arguments are required: COMMAND"),
    (["frob"], "argument COMMAND: invalid choice: 'frob'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) or "-" for a, _ in BAD_INPUT])
def test_every_command_exits_2_on_bad_input_with_one_line(
    cluster_settings: Settings, mysql_engine: Engine, args: list[str], message: str
) -> None:
    result = run(cluster_settings, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in one_line_error(result)
    assert result.stdout == ""


NOT_FOUND = [
    (["jobs", "show", "999999"], "tickwork: job 999999 not found"),
    (["jobs", "show", "no-such-job"], "tickwork: job 'no-such-job' not found"),
    (["jobs", "pause", "no-such-job"], "tickwork: job 'no-such-job' not found"),
    (["jobs", "resume", "999999"], "tickwork: job 999999 not found"),
    (["jobs", "trigger", "no-such-job"], "tickwork: job 'no-such-job' not found"),
    (["jobs", "delete", "-1"], "tickwork: job '-1' not found"),  # not an id: a name
    (["runs", "show", "999999"], "tickwork: run 999999 not found"),
    (["runs", "list", "--job", "no-such-job"], "tickwork: job 'no-such-job' not found"),
    (["dlq", "replay", "999999"], "tickwork: run(s) 999999 not found (nothing replayed)"),
    (["dlq", "purge", "999999", "999998"], "tickwork: run(s) 999999, 999998 not found (nothing discarded)"),
]


@pytest.mark.parametrize(("args", "message"), NOT_FOUND, ids=[" ".join(a) for a, _ in NOT_FOUND])
def test_unknown_ids_and_names_exit_1_with_one_line(
    cluster_settings: Settings, mysql_engine: Engine, args: list[str], message: str
) -> None:
    result = run(cluster_settings, *args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert one_line_error(result) == message


def test_a_database_that_is_down_exits_1_with_one_line(cluster_settings: Settings) -> None:
    down = cluster_settings.model_copy(update={"database_url": "mysql+pymysql://root@127.0.0.1:1/tickwork"})
    for args in (["jobs", "list"], ["runs", "show", "1"], ["dlq", "list"], ["db", "upgrade"]):
        result = run(down, *args)
        assert result.returncode == 1, args
        assert "tickwork: database error: (2003, \"Can't connect to MySQL server" in one_line_error(result)


@pytest.mark.parametrize("command", ["api", "dev"])
def test_a_busy_port_exits_1_naming_it(
    cluster_settings: Settings, mysql_engine: Engine, command: str
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(cluster_settings, command, "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert one_line_error(result) == (
        f"tickwork: cannot listen on 127.0.0.1:{port} (--port or TICKWORK_API_PORT): Address already in use"
    )


def test_trigger_with_the_broker_down_keeps_the_run_pending_and_says_so(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    ok(cluster_settings, "jobs", "add", "--name", "offline", "--http", "http://127.0.0.1/x")
    down = cluster_settings.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:1/%2F"})
    result = run(down, "jobs", "trigger", "offline")
    assert result.returncode == 0, result.stderr
    assert "PENDING; publishing failed" in result.stdout
    assert "Traceback" not in result.stderr
    assert "stays PENDING for the outbox sweep" in result.stderr  # the warning, on one line
    run_id = int(result.stdout.split()[1])
    assert get_run(mysql_engine, run_id).status == RunStatus.PENDING.value


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
    # A purge naming a run that is not DEAD (or not there) discards none of them and says which.
    mixed = run(s, "dlq", "purge", str(other), str(dead), "999999")
    assert mixed.returncode == 1, mixed.stderr
    assert one_line_error(mixed) == (
        f"tickwork: run(s) 999999 not found; run {dead} is REPLAYED, not DEAD (nothing discarded)"
    )
    assert get_run(mysql_engine, other).status == RunStatus.DEAD.value
    mixed = run(s, "dlq", "replay", str(other), str(dead))
    assert mixed.returncode == 1 and "nothing replayed" in one_line_error(mixed)
    assert get_run(mysql_engine, other).status == RunStatus.DEAD.value
    assert json.loads(ok(s, "dlq", "purge", "--all", "--json")) == {"purged": 1}
    assert get_run(mysql_engine, other).status == RunStatus.DISCARDED.value


def test_token_prints_a_signed_token(cluster_settings: Settings) -> None:
    token = ok(cluster_settings, "token", "--role", "admin", "--ttl", "120").strip()
    claims = jwt.decode(token, cluster_settings.auth_secret, algorithms=["HS256"])
    assert claims["role"] == "admin" and claims["exp"] - claims["iat"] == 120
    bad = run(cluster_settings, "token", "--role", "root")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    zero = run(cluster_settings, "token", "--role", "viewer", "--ttl", "0")
    assert zero.returncode == 2 and "argument --ttl: 0 is out of range" in zero.stderr


def test_commands_refuse_an_unmigrated_database(tmp_path: Path, cluster_settings: Settings) -> None:
    (tmp_path / "empty.db").touch()  # a database without tickwork's schema (a missing file: test_cli_issue9)
    empty = cluster_settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'empty.db'}"})
    commands = (["jobs", "list"], ["runs", "list"], ["dlq", "list"], ["api"], ["dev", "--no-migrate"])
    for args in commands:
        result = run(empty, *args, api_port=0)
        assert result.returncode == 1, args
        assert "tickwork db upgrade" in one_line_error(result), args


@pytest.fixture
def empty_mysql_url() -> Iterator[str]:
    """A MariaDB database with no tables (not migrated); dropped afterwards."""
    name = f"tickwork_empty_{uuid.uuid4().hex[:8]}"
    server = create_engine(MYSQL_SERVER_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield f"{MYSQL_SERVER_URL}/{name}"
    finally:
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


def test_dev_migrates_sqlite_itself_but_not_mysql(
    tmp_path: Path, cluster_settings: Settings, empty_mysql_url: str
) -> None:
    embedded = cluster_settings.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'fresh.db'}",
            "broker_url": "memory://",
            "redis_url": "",
        }
    )
    with running_dev(embedded) as (url, token):
        jobs = httpx.get(f"{url}/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert jobs.status_code == 200 and jobs.json()["total"] == 0

    mysql = embedded.model_copy(update={"database_url": empty_mysql_url})
    refused = run(mysql, "dev", "--port", "0")
    assert refused.returncode == 1
    assert "has no tickwork schema" in one_line_error(refused)
    assert "tickwork db upgrade" in refused.stderr
    with running_dev(mysql, "--migrate") as (url, token):
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    assert ok(mysql, "db", "current").startswith("current: ")


@contextmanager
def running_dev(settings: Settings, *extra: str) -> Iterator[tuple[str, str]]:
    """``tickwork dev --port 0`` until the block ends: its URL and admin token; SIGTERM exits 0."""
    proc = subprocess.Popen(
        tickwork_cmd("dev", "--port", "0", *extra),
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        found: dict[str, str] = {}
        while not {"TICKWORK_URL", "TICKWORK_TOKEN"} <= found.keys():
            line = proc.stdout.readline()
            assert line, f"tickwork dev exited with {proc.wait(timeout=10)}"
            key, sep, value = line.strip().partition("=")
            if sep:
                found[key] = value
        yield found["TICKWORK_URL"], found["TICKWORK_TOKEN"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


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


def test_cli_edits_wake_the_schedulers(cluster_settings: Settings, mysql_engine: Engine) -> None:
    """`jobs add`, `pause` and `resume` publish on the schedulers' wake channel (as the API does),
    so a running scheduler re-reads the jobs at once instead of at its next idle poll."""
    import time

    import redis

    from tickwork.keys import scheduler_wake_channel

    client = redis.Redis.from_url(cluster_settings.redis_url or "")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(scheduler_wake_channel(cluster_settings.namespace))
    try:

        def next_wake() -> bytes:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    return bytes(message["data"])
            raise AssertionError("no wake-up published")

        ok(cluster_settings, "jobs", "add", "--name", "woken", "--http", "http://127.0.0.1/x")
        assert next_wake() == b"created"
        ok(cluster_settings, "jobs", "pause", "woken")
        assert next_wake() == b"paused"
        ok(cluster_settings, "jobs", "resume", "woken")
        assert next_wake() == b"resumed"
    finally:
        pubsub.close()
        client.close()
