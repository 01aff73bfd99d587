"""OverriddenHooks: the same hook calls, in the same order, as Dramatiq's own emit loops."""

from __future__ import annotations

from typing import Any

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, SkipMessage

from tickwork.messaging import TickworkStubBroker


class Recorder(Middleware):
    """Overrides two hooks and records every call into a shared list."""

    def __init__(self, name: str, calls: list[str], *, skip: bool = False, fail: bool = False) -> None:
        self.name, self.calls, self.skip, self.fail = name, calls, skip, fail

    def before_process_message(self, broker: Any, message: Any) -> None:
        self.calls.append(f"before {self.name}")
        if self.skip:
            raise SkipMessage()
        if self.fail:
            raise RuntimeError("boom")

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        self.calls.append(f"after {self.name}")
        if self.fail:
            raise RuntimeError("boom")


class Silent(Middleware):
    """Overrides nothing: skipped by the dispatch table."""


class AckOnly(Middleware):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def after_ack(self, broker: Any, message: Any) -> None:
        self.calls.append("after ack")


def brokers(**recorder: bool) -> list[tuple[Any, list[str]]]:
    """A Dramatiq StubBroker and a TickworkStubBroker with equal middleware lists."""
    made = []
    for cls in (StubBroker, TickworkStubBroker):
        calls: list[str] = []
        middleware = [Recorder("a", calls), Silent(), Recorder("b", calls, **recorder), AckOnly(calls)]
        made.append((cls(middleware=middleware), calls))
    return made


def message() -> Message[Any]:
    return Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})


def emit_all(broker: Any) -> None:
    broker.emit_before("process_message", message())
    broker.emit_after("process_message", message(), result=None)
    broker.emit_before("ack", message())
    broker.emit_after("ack", message())


def test_same_calls_in_the_same_order_as_dramatiq() -> None:
    (dramatiq_broker, expected), (tickwork_broker, got) = brokers()
    emit_all(dramatiq_broker)
    emit_all(tickwork_broker)
    assert got == expected == ["before a", "before b", "after b", "after a", "after ack"]


def test_a_middleware_error_stops_the_before_loop_as_in_dramatiq() -> None:
    for broker, calls in brokers(skip=True):
        with pytest.raises(SkipMessage):
            broker.emit_before("process_message", message())
        assert calls == ["before a", "before b"]


def test_other_errors_are_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    (_, _), (broker, calls) = brokers(fail=True)
    broker.emit_before("process_message", message())
    broker.emit_after("process_message", message(), result=None)
    assert calls == ["before a", "before b", "after b", "after a"]
    assert sum("Unexpected failure" in r.message for r in caplog.records) == 2


def test_middleware_added_later_is_called() -> None:
    (_, _), (broker, calls) = brokers()
    broker.emit_before("process_message", message())  # builds the table
    broker.add_middleware(Recorder("late", calls))
    calls.clear()
    broker.emit_before("process_message", message())
    assert calls == ["before a", "before b", "before late"]


def test_a_hook_set_on_the_instance_counts_as_overridden() -> None:
    (_, _), (broker, calls) = brokers()
    silent = next(m for m in broker.middleware if isinstance(m, Silent))
    silent.before_ack = lambda broker, message: calls.append("before ack")  # type: ignore[method-assign]
    broker.add_middleware(Silent())  # rebuilds the table
    broker.emit_before("ack", message())
    assert calls == ["before ack"]
