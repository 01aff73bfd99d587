"""The worker's middleware order is behaviour (RunLog settles only what Backoff and DeadLetter
left, the claim precedes the actor, no second retrier): it is stated once, in
``tickwork.worker.MIDDLEWARE_ORDER``, and this test fails if the broker's order changes."""

from __future__ import annotations

import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries
from sqlalchemy import Engine

from tickwork.config import load_settings
from tickwork.worker import MIDDLEWARE_ORDER, build_middleware, setup_broker

pytestmark = pytest.mark.unit

EXPECTED = (
    "LogContext",
    "Metrics",
    "Heartbeat",
    "RunLog",
    "DeadLetter",
    "Backoff",
    "TimeLimit",
    "AgeLimit",
    "ShutdownNotifications",
    "Callbacks",
    "Pipelines",
    "EventLoop",
)


def test_the_stated_order_is_the_expected_one() -> None:
    assert MIDDLEWARE_ORDER == EXPECTED


def test_the_broker_runs_the_middleware_in_the_stated_order(sqlite_engine: Engine) -> None:
    settings = load_settings(database_url=str(sqlite_engine.url), namespace="order")
    names = [type(m).__name__ for m in build_middleware(settings, sqlite_engine)]
    assert tuple(names) == EXPECTED
    broker = setup_broker(settings, engine=sqlite_engine, register=False)
    try:
        assert isinstance(broker, StubBroker)
        on_broker = [type(m).__name__ for m in broker.middleware]
        # The broker adds its own registration middleware after tickwork's, and no retrier.
        assert tuple(on_broker[: len(EXPECTED)]) == EXPECTED
        assert not any(isinstance(m, Retries) for m in broker.middleware)
        run_log = on_broker.index("RunLog")
        # after_* hooks run in reverse: Backoff, then DeadLetter, then RunLog.
        assert run_log < on_broker.index("DeadLetter") < on_broker.index("Backoff")
    finally:
        broker.close()
