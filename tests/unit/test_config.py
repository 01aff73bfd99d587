from __future__ import annotations

import pytest

from tickwork.config import load_settings
from tickwork.errors import ConfigError

pytestmark = pytest.mark.unit


def test_defaults_are_the_embedded_mode() -> None:
    settings = load_settings()
    assert settings.database_url.startswith("sqlite")
    assert settings.embedded_broker
    assert settings.redis_url is None


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("TICKWORK_BROKER_URL", "kafka://x", "amqp"),
        ("TICKWORK_DATABASE_URL", "postgres://x", "mysql"),
        ("TICKWORK_REDIS_URL", "http://x", "redis://"),
        ("TICKWORK_LOG_LEVEL", "LOUD", "INFO"),
        ("TICKWORK_OUTPUT_MAX_BYTES", "-1", "greater"),
        ("TICKWORK_COMMIT_DELAY_MS", "-1", "greater"),
        ("TICKWORK_COMMIT_DELAY_MS", "500", "less"),
        ("TICKWORK_AUTH_SECRET", "short", "16"),
        ("TICKWORK_HTTP_DENY_NETWORKS", '["not-a-net"]', "not a network"),
    ],
)
def test_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == env
    assert needle in info.value.reason


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"leader_ttl_ms": 3000, "leader_renew_ms": 5000}, "TICKWORK_LEADER_RENEW_MS"),
        ({"leader_ttl_ms": 3000, "leader_renew_ms": 3000}, "TICKWORK_LEADER_RENEW_MS"),
        (
            {"heartbeat_ttl_seconds": 10, "heartbeat_interval_seconds": 20},
            "TICKWORK_HEARTBEAT_INTERVAL_SECONDS",
        ),
    ],
)
def test_timings_that_contradict_each_other_are_refused(values: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**values)
    assert info.value.field == field
    assert "below" in info.value.reason


def test_the_commit_delay_reaches_the_workers_committer(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import create_engine

    from tickwork.middleware.run_log import RunLog
    from tickwork.worker import build_middleware

    monkeypatch.setenv("TICKWORK_COMMIT_DELAY_MS", "2.5")
    settings = load_settings()
    engine = create_engine("mysql+pymysql://root@127.0.0.1:3306/x")  # never connected
    run_log = next(m for m in build_middleware(settings, engine) if isinstance(m, RunLog))
    assert run_log.recorder.commit_delay == 0.0025
    sqlite = create_engine("sqlite://")
    run_log = next(m for m in build_middleware(settings, sqlite) if isinstance(m, RunLog))
    assert run_log.recorder.commit_delay == 0.0  # one writer, no group to wait for
