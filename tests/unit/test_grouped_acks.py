"""tickwork.amqp.GroupedAcks without RabbitMQ: grouping, unknown tags, a connection gone.

The real consumer is exercised in tests/integration/test_amqp_pika.py.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pika
import pytest
from dramatiq.errors import ConnectionClosed

from tickwork.amqp import GroupedAcks

pytestmark = pytest.mark.unit


class FakeConsumer:
    """The attributes of Dramatiq's pika consumer that GroupedAcks uses."""

    def __init__(self) -> None:
        self.known_tags = {1, 2, 3}
        self.logger = logging.getLogger("fake-consumer")
        self.callbacks: list[Any] = []
        self.acked: list[int] = []
        self.connection = SimpleNamespace(add_callback_threadsafe=self.callbacks.append)
        self.channel = SimpleNamespace(_impl=SimpleNamespace(basic_ack=self._ack))
        self.nacked: list[Any] = []
        self.closed = False

    def _ack(self, delivery_tag: int) -> None:
        self.acked.append(delivery_tag)

    def nack(self, message: Any) -> None:
        self.nacked.append(message)

    def close(self) -> None:
        self.closed = True


def message(tag: int) -> Any:
    return SimpleNamespace(_tag=tag)


def test_a_group_of_acks_is_one_callback_and_every_tag_is_acked_once() -> None:
    fake = FakeConsumer()
    consumer = GroupedAcks(fake)
    for tag in (2, 1):
        consumer.ack(message(tag))
    assert len(fake.callbacks) == 1 and fake.acked == []
    fake.callbacks.pop()()  # the consumer thread's turn
    assert fake.acked == [2, 1] and fake.known_tags == {3}
    consumer.ack(message(3))  # a new group after the last was sent
    assert len(fake.callbacks) == 1
    fake.callbacks.pop()()
    assert fake.acked == [2, 1, 3]


def test_an_unknown_tag_is_not_acked(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeConsumer()
    consumer = GroupedAcks(fake)
    consumer.ack(message(1))
    fake.callbacks.pop()()
    with caplog.at_level(logging.WARNING):
        consumer.ack(message(1))  # acked already (or from a consumer before a reconnect)
    assert fake.acked == [1] and fake.callbacks == []
    assert "not in known tags" in caplog.text


def test_a_closed_connection_raises_connection_closed_and_forgets_the_group() -> None:
    fake = FakeConsumer()

    def closed(callback: Any) -> None:
        raise pika.exceptions.ConnectionWrongStateError("closed")

    fake.connection = SimpleNamespace(add_callback_threadsafe=closed)
    consumer = GroupedAcks(fake)
    with pytest.raises(ConnectionClosed):
        consumer.ack(message(1))
    fake.connection = SimpleNamespace(add_callback_threadsafe=fake.callbacks.append)
    consumer.ack(message(2))  # the next ack starts a group of its own and is scheduled
    assert len(fake.callbacks) == 1
    fake.callbacks.pop()()
    assert fake.acked == [2]


def test_the_rest_is_the_wrapped_consumers() -> None:
    fake = FakeConsumer()
    consumer = GroupedAcks(fake)
    consumer.nack(message(1))
    consumer.close()
    assert fake.nacked and fake.closed and consumer.known_tags is fake.known_tags
    assert GroupedAcks.wraps(fake) and not GroupedAcks.wraps(object())


def test_deliveries_come_with_the_message_fields_pinned_and_none_passes_through() -> None:
    """The fields are copied onto the proxy (read without MessageProxy.__getattr__), equal to
    the message's, and ``options`` is the message's own dict (a middleware writing to it writes
    to the message)."""
    import dramatiq
    from dramatiq.broker import MessageProxy

    inner = dramatiq.Message(
        queue_name="ns.q", actor_name="a", args=(1,), kwargs={"k": 2}, options={"tickwork": {"run_id": 7}}
    )
    deliveries: list[Any] = [MessageProxy(inner), None]

    class Iterating(FakeConsumer):
        def __next__(self) -> Any:
            return deliveries.pop(0)

    consumer = GroupedAcks(Iterating())
    proxy = next(consumer)
    assert proxy is not None
    fields = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
    assert {name: vars(proxy)[name] for name in fields} == {name: getattr(inner, name) for name in fields}
    assert proxy.options is inner.options
    proxy.options["tickwork"]["attempt"] = 2
    assert inner.options["tickwork"]["attempt"] == 2
    assert next(consumer) is None  # the idle timeout's None reaches Dramatiq's consumer thread
