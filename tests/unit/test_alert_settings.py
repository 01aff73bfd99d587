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
