"""tickwork.tracing without opentelemetry installed: everything is a no-op, nothing fails."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from tickwork import tracing
from tickwork.errors import ConfigError
from tickwork.store.models import utcnow

pytestmark = pytest.mark.unit


@pytest.fixture
def without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import opentelemetry → ImportError
    importlib.reload(tracing)
    yield
    monkeypatch.undo()
    importlib.reload(tracing)


def test_every_hook_is_a_no_op_without_opentelemetry(without_opentelemetry: None) -> None:
    assert tracing.AVAILABLE is False and tracing.active() is False
    assert (
        tracing.start_fire(job_id=1, job_name="j", run_id=1, scheduled_for=utcnow(), attempt=1, trigger="x")
        is None
    )
    with tracing.current(None):
        options: dict[str, object] = {}
        tracing.inject(options)
        assert options == {}
    message = SimpleNamespace(options={}, message_id="m")
    tracing.begin_attempt(message, {"job_id": 1, "job_name": "j", "run_id": 1, "attempt": 1})
    tracing.attempt_event("claimed")
    tracing.end_attempt(status="SUCCESS")
    tracing.end_fire(None, published=True)
    tracing.configure("", "tickwork-test")  # no exporter asked for: fine
    with pytest.raises(ConfigError) as caught:
        tracing.configure("console", "tickwork-test")
    assert caught.value.field == "TICKWORK_TRACES_EXPORTER" and "tickwork[otel]" in caught.value.reason


def test_it_comes_back_with_opentelemetry() -> None:
    assert tracing.AVAILABLE is True


def test_the_global_provider_is_looked_up_at_most_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """``active()`` runs for every attempt; OpenTelemetry's lookup reads ``os.environ`` each time."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import ProxyTracerProvider

    lookups: list[object] = []
    provider: list[object] = [ProxyTracerProvider()]

    def get_tracer_provider() -> object:
        lookups.append(provider[0])
        return provider[0]

    clock = [1000.0]
    monkeypatch.setattr(tracing.trace, "get_tracer_provider", get_tracer_provider)
    monkeypatch.setattr(tracing.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(tracing, "_global_set", False)
    monkeypatch.setattr(tracing, "_looked_at", float("-inf"))
    assert not any(tracing.active() for _ in range(1000))
    assert len(lookups) == 1
    provider[0] = TracerProvider()  # the application sets one
    clock[0] += tracing.LOOKUP_INTERVAL / 2
    assert tracing.active() is False and len(lookups) == 1  # believed unset for the interval
    clock[0] += tracing.LOOKUP_INTERVAL
    assert tracing.active() is True and len(lookups) == 2
    clock[0] += 10 * tracing.LOOKUP_INTERVAL
    assert all(tracing.active() for _ in range(100)) and len(lookups) == 2  # set for good
