"""Issue 14 through the ``tickwork`` command (subprocesses) on the session's MariaDB."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine

from tests.integration.test_cli import ok, run
from tickwork.config import Settings

pytestmark = pytest.mark.integration


def test_tags_and_max_concurrency_from_the_cli(cluster_settings: Settings, mysql_engine: Engine) -> None:
    s = cluster_settings
    common = ["--cron", "0 0 * * * *", "--http", "http://127.0.0.1:8080/post", "--json"]
    a = json.loads(ok(s, "jobs", "add", "--name", "a", "--tag", "prod", "--tag", "eu", *common))
    ok(s, "jobs", "add", "--name", "b", "--tag", "dev", "--max-concurrency", "2", *common)
    assert a["tags"] == ["prod", "eu"] and a["maxConcurrency"] is None
    listed = json.loads(ok(s, "jobs", "list", "--tag", "dev", "--json"))
    assert [(j["name"], j["maxConcurrency"]) for j in listed["items"]] == [("b", 2)]
    assert "prod,eu" in ok(s, "jobs", "list", "--tag", "prod")
    bad = run(s, "jobs", "add", "--name", "c", "--tag", "has space", *common)
    assert bad.returncode == 2 and "--tag (tags.0)" in bad.stderr, bad.stderr
    bad = run(s, "jobs", "add", "--name", "c", "--max-concurrency", "0", *common)
    assert bad.returncode == 2 and "--max-concurrency (maxConcurrency)" in bad.stderr, bad.stderr
    bad = run(s, "jobs", "list", "--tag", "a b")
    assert bad.returncode == 2 and "--tag" in bad.stderr
    assert json.loads(ok(s, "jobs", "list", "--json"))["total"] == 2


def test_trigger_with_an_idempotency_key_from_the_cli(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    s = cluster_settings
    job = json.loads(ok(s, "jobs", "add", "--name", "idem", "--http", "http://127.0.0.1:8080/post", "--json"))
    first = json.loads(ok(s, "jobs", "trigger", "idem", "--idempotency-key", "deploy-42", "--json"))
    again = json.loads(ok(s, "jobs", "trigger", str(job["id"]), "--idempotency-key", "deploy-42", "--json"))
    assert first["id"] == again["id"] and first["jobId"] == job["id"]
    assert "already made by this key" in ok(s, "jobs", "trigger", "idem", "--idempotency-key", "deploy-42")
    other = json.loads(ok(s, "jobs", "trigger", "idem", "--idempotency-key", "deploy-43", "--json"))
    assert other["id"] != first["id"]
    bad = run(s, "jobs", "trigger", "idem", "--idempotency-key", "a b")
    assert bad.returncode == 2 and "invalid --idempotency-key" in bad.stderr, bad.stderr


def test_cli_writes_are_in_the_audit_trail(cluster_settings: Settings, mysql_engine: Engine) -> None:
    s = cluster_settings
    ok(s, "jobs", "add", "--name", "aud", "--http", "http://127.0.0.1:8080/post")
    ok(s, "jobs", "pause", "aud")
    ok(s, "jobs", "trigger", "aud")
    job_id = json.loads(ok(s, "jobs", "show", "aud", "--json"))["id"]
    ok(s, "jobs", "delete", "aud")
    listed = json.loads(ok(s, "events", "list", "--job", str(job_id), "--json"))
    assert [(e["kind"], e["actor"], e["role"]) for e in reversed(listed["items"])] == [
        ("job.created", "cli", None),
        ("job.paused", "cli", None),
        ("job.triggered", "cli", None),
        ("job.deleted", "cli", None),
    ]
    only = json.loads(ok(s, "events", "list", "--kind", "job.paused", "--json"))["items"]
    assert [e["details"]["changes"]["enabled"] for e in only] == [{"before": True, "after": False}]
    table = ok(s, "events", "list", "--limit", "2")
    assert "job.deleted" in table and "cli" in table
    paged = json.loads(ok(s, "events", "list", "--limit", "2", "--json"))
    older = json.loads(ok(s, "events", "list", "--before-id", str(paged["nextBeforeId"]), "--json"))
    assert len(older["items"]) == 2 and older["items"][0]["id"] < paged["items"][-1]["id"]
    bad = run(s, "events", "list", "--kind", "job.exploded")
    assert bad.returncode == 2


def test_backfill_from_the_cli(cluster_settings: Settings, mysql_engine: Engine) -> None:
    s = cluster_settings
    ok(s, "jobs", "add", "--name", "fill", "--cron", "0 0 * * * *", "--http", "http://127.0.0.1:8080/post")
    args = ["jobs", "backfill", "fill", "--start", "2025-06-01T00:00:00Z", "--end", "2025-06-01T06:00:00Z"]
    assert json.loads(ok(s, *args, "--json")) == {"fires": 6, "skippedExisting": 0}
    assert "0 fire(s) written, 6 already existed" in ok(s, *args)
    too_late = run(s, "jobs", "backfill", "fill", "--start", "2025-06-01T00:00:00Z", "--end", "2999-01-01")
    assert too_late.returncode == 2 and "invalid --end" in too_late.stderr, too_late.stderr
    bad = run(s, "jobs", "backfill", "fill", "--start", "soon", "--end", "2025-06-01T06:00:00Z")
    assert bad.returncode == 2 and "--start" in bad.stderr
    many = run(
        s,
        "jobs",
        "backfill",
        "fill",
        "--start",
        "2000-01-01",
        "--end",
        "2025-01-01",
        backfill_max_fires="100",
    )
    assert many.returncode == 2 and "more than 100,000 fires" in many.stderr, many.stderr
    events = json.loads(ok(s, "events", "list", "--kind", "job.backfilled", "--json"))["items"]
    assert [(e["actor"], e["details"]["fires"]) for e in events] == [("cli", 0), ("cli", 6)]
