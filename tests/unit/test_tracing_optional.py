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
