"""The ``tickwork`` command as a new user meets it (issue 9): pipes, other directories."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from tests.conftest import ROOT, settings_env, tickwork_cmd
from tickwork.api.auth import decode_token
from tickwork.config import Settings, load_settings
from tickwork.config.settings import resolve_auth_secret
from tickwork.spec import JobSpec
from tickwork.store.engine import upgrade
from tickwork.store.jobs import create_job
from tickwork.store.models import runs_table

pytestmark = pytest.mark.integration
TIMEOUT = 60


def test_a_closed_stdout_pipe_ends_quietly(cluster_settings: Settings, mysql_engine: Engine) -> None:
    """``tickwork runs list --json | head -1``: far more than a pipe buffer, the reader leaves."""
    job = create_job(
        mysql_engine,
        JobSpec.model_validate({"name": "many", "handlerType": "http", "handlerData": "http://x.test/"}),
    )
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "job_id": job.id,
            "scheduled_for": base + timedelta(seconds=i),
            "attempt": 1,
            "status": "SUCCESS",
            "trigger": "schedule",
            "available_at": base,
            "output": "x" * 200,
            "created_at": base,
            "updated_at": base,
        }
        for i in range(3000)
    ]
    with mysql_engine.begin() as conn:
        conn.execute(insert(runs_table), rows)
    proc = subprocess.Popen(
        tickwork_cmd("runs", "list", "--json", "--limit", "3000"),
        env=settings_env(cluster_settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"{"
    proc.stdout.close()  # what `head -1` does after its line
    code = proc.wait(TIMEOUT)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert stderr == ""
    assert code == 0


def env_in(directory: Path, **extra: str) -> dict[str, str]:
    """The environment of a user in ``directory`` with no TICKWORK_ settings but ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({f"TICKWORK_{k.upper()}": v for k, v in extra.items()})
    return env


def run_in(directory: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tickwork_cmd(*args),
        cwd=directory,
        env=env_in(directory, **extra),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("command", [["token"], ["jobs", "list"], ["runs", "list"], ["dlq", "list"]])
def test_read_only_commands_in_another_directory_create_no_files(tmp_path: Path, command: list[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_in(elsewhere, *command)
    assert result.returncode == 1, result.stderr
    assert list(elsewhere.iterdir()) == []  # no stray tickwork.db or tickwork.db.secret
    assert "sqlite:///tickwork.db" in result.stderr
    assert str(elsewhere / "tickwork.db") in result.stderr
    assert "tickwork dev" in result.stderr
    assert "db upgrade" not in result.stderr  # not the fix for running in the wrong directory


def test_token_from_another_directory_is_signed_with_the_dev_servers_secret(tmp_path: Path) -> None:
    home = tmp_path / "project"
    home.mkdir()
    url = f"sqlite:///{home / 'tickwork.db'}"
    upgrade(url)
    dev = resolve_auth_secret(load_settings(database_url=url))  # what `tickwork dev` does at start
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_in(elsewhere, "token", "--role", "admin", database_url=url)
    assert result.returncode == 0, result.stderr
    assert decode_token(dev, result.stdout.strip()).role.value == "admin"
    assert list(elsewhere.iterdir()) == []


def test_token_before_the_dev_server_made_its_secret_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    result = run_in(tmp_path, "token")
    assert result.returncode == 2
    assert "no token secret next to the database at sqlite:///tickwork.db" in result.stderr
    assert not (tmp_path / "tickwork.db.secret").exists()
