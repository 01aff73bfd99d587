"""Connectivity to the real Redis and RabbitMQ through the clients tickwork uses."""

from __future__ import annotations

import dramatiq
import pytest
import redis

from tickwork.config import load_settings
from tickwork.messaging import make_broker, queue_name

pytestmark = pytest.mark.integration


def test_redis_set_nx_with_ttl(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"{namespace}:probe"
    assert client.set(key, "a", nx=True, px=5000)
    assert not client.set(key, "b", nx=True, px=5000)
    assert client.get(key) == b"a"
    assert 0 < client.pttl(key) <= 5000
    client.delete(key)


def test_rabbitmq_round_trip_through_dramatiq(amqp_url: str, namespace: str) -> None:
    settings = load_settings(broker_url=amqp_url, namespace=namespace)
    broker = make_broker(settings)
    queue = queue_name(settings, "default")
    broker.declare_queue(queue)
    message = dramatiq.Message(queue_name=queue, actor_name="probe", args=(1,), kwargs={}, options={})
    broker.enqueue(message)
    consumer = broker.consume(queue, prefetch=1, timeout=1000)
    received = None
    for _ in range(20):
        received = next(consumer)
        if received is not None:
            break
    assert received is not None and received.message_id == message.message_id
    consumer.ack(received)
    consumer.close()
    broker.channel.queue_delete(queue)
    broker.channel.queue_delete(queue + ".DQ")
    broker.channel.queue_delete(queue + ".XQ")
    broker.close()
