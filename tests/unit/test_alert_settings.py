"""Issue 13's settings: a bad TICKWORK_NOTIFY_URL (the http deny list applies, in any spelling)
or inconsistent delivery backoffs stop a process at start-up naming the variable (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tickwork.config import load_settings
from tickwork.errors import ConfigError
from tickwork.notify import check_notify_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest", "denied network"),
        ("http://0xa9fea9fe/hook", "denied network"),  # the same address, spelled for inet_aton
        ("http://[fe80::1]/hook", "denied network"),
        ("ftp://example.com/hook", "http:// or https://"),
        ("http:///hook", "no host"),
    ],
)
def test_a_bad_notify_url_is_refused_naming_the_variable(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_notify_url(load_settings(notify_url=url))
    assert caught.value.field == "TICKWORK_NOTIFY_URL" and reason in caught.value.reason


def test_an_allowed_notify_url_and_the_defaults() -> None:
    settings = load_settings(notify_url="https://hooks.example.com/tickwork")
    check_notify_url(settings)
    assert settings.notify_backoff_seconds == 10 and settings.notify_max_backoff_seconds == 3600
    assert settings.notify_deadline_seconds == 86400 and settings.notify_timeout_seconds == 10
    assert load_settings().notify_url is None


def test_a_cap_below_the_backoff_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(notify_backoff_seconds=100, notify_max_backoff_seconds=10)
    assert caught.value.field == "TICKWORK_NOTIFY_MAX_BACKOFF_SECONDS"


@pytest.mark.parametrize("command", [["scheduler"], ["api", "--port", "0"]])
def test_scheduler_and_api_exit_2_on_a_denied_notify_url(command: list[str], tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "TICKWORK_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}"}
    upgrade = [sys.executable, "-m", "tickwork", "db", "upgrade"]
    subprocess.run(upgrade, env=env, cwd=tmp_path, capture_output=True, timeout=60, check=True)
    env["TICKWORK_NOTIFY_URL"] = "http://169.254.169.254/latest"
    result = subprocess.run(
        [sys.executable, "-m", "tickwork", *command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "tickwork: invalid TICKWORK_NOTIFY_URL: address 169.254.169.254 is in denied network 169.254.0.0/16"
    ]


def test_migration_0003_marks_paused_jobs_manual_and_downgrades(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import create_engine, inspect, text

    from tickwork.store.engine import alembic_config, upgrade

    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0002")
    engine = create_engine(url)
    with engine.begin() as conn:
        for name, enabled in (("paused-before", 0), ("running", 1)):
            conn.execute(
                text(
                    "INSERT INTO jobs (name, timezone, handler_type, handler_data, retry_count, "
                    "retry_backoff_seconds, max_backoff_seconds, queue, misfire_policy, overlap_policy, "
                    "enabled, source, version, created_at, updated_at) VALUES (:name, 'UTC', 'http', "
                    "'http://x/', 0, 1, 1, 'default', 'fire_once', 'allow', :enabled, 'api', 1, "
                    "'2026-01-01', '2026-01-01')"
                ),
                {"name": name, "enabled": enabled},
            )
    upgrade(url)
    with engine.connect() as conn:
        reasons = dict(conn.execute(text("SELECT name, paused_reason FROM jobs")).all())
    assert reasons == {"paused-before": "manual", "running": None}
    assert "notifications" in inspect(engine).get_table_names()
    command.downgrade(alembic_config(url), "0002")
    engine.dispose()
    engine = create_engine(url)
    assert "notifications" not in inspect(engine).get_table_names()
    assert "late_after_seconds" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert "late_at" not in {c["name"] for c in inspect(engine).get_columns("job_runs")}
    engine.dispose()
