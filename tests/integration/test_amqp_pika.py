"""tickwork.amqp writes AMQP frames itself, through pika internals (a channel's ``_impl``, the
connection's ``_body_max_length`` and ``_output_marshaled_frames``). A pika release that renames
or changes them must fail here, not in production: the frames are checked byte for byte
against what pika's own ``basic_publish`` writes, and a batch is sent to RabbitMQ and read back.
"""

from __future__ import annotations

import dramatiq
import pika
import pytest
from sqlalchemy import Engine

from tickwork import amqp
from tickwork.config import Settings
from tickwork.messaging import is_rabbitmq, make_broker, queue_name

pytestmark = pytest.mark.integration


def messages(settings: Settings, count: int, *, big: bool = False) -> list[dramatiq.Message[object]]:
    queue = queue_name(settings, "default")
    # A body over the frame size is split into several body frames, as pika splits it.
    payload = "x" * (300_000 if big else 10)
    return [
        dramatiq.Message(queue_name=queue, actor_name="tw_noop", args=(i, payload), kwargs={}, options={})
        for i in range(count)
    ]


def test_the_pika_internals_amqp_uses_are_there(cluster_settings: Settings) -> None:
    broker = make_broker(cluster_settings)
    try:
        assert is_rabbitmq(broker)
        channel = amqp.tx_channel(broker)
        impl = channel._impl
        assert isinstance(impl.channel_number, int)
        assert isinstance(impl.connection._body_max_length, int) and impl.connection._body_max_length > 0
        assert callable(impl.connection._output_marshaled_frames)
        assert callable(impl.connection._send_message)
    finally:
        broker.close()


@pytest.mark.parametrize("big", [False, True], ids=["small", "split-body"])
def test_prepared_frames_are_the_frames_pika_writes(cluster_settings: Settings, big: bool) -> None:
    broker = make_broker(cluster_settings)
    try:
        batch = amqp.prepare(broker, messages(cluster_settings, 3, big=big))
        channel = amqp.tx_channel(broker)
        assert batch.channel is channel
        connection = channel._impl.connection
        written: list[bytes] = []
        real = connection._output_marshaled_frames
        connection._output_marshaled_frames = written.extend
        try:
            for routed in batch.routed:
                channel._impl.basic_publish(
                    exchange="",
                    routing_key=routed.queue_name,
                    body=routed.encode(),
                    properties=pika.BasicProperties(
                        delivery_mode=2, priority=routed.options.get("broker_priority")
                    ),
                )
        finally:
            connection._output_marshaled_frames = real
        assert b"".join(written) == batch.data
    finally:
        broker.close()


def test_a_prepared_batch_arrives_whole_and_persistent(cluster_settings: Settings) -> None:
    broker = make_broker(cluster_settings)
    try:
        sent = messages(cluster_settings, 5) + messages(cluster_settings, 1, big=True)
        amqp.publish_prepared(broker, amqp.prepare(broker, sent))
        channel = broker.channel  # type: ignore[attr-defined]
        received = []
        for _ in range(len(sent)):
            method, properties, body = channel.basic_get(sent[0].queue_name, auto_ack=True)
            assert method is not None, "a message of the batch is missing"
            assert properties.delivery_mode == 2
            received.append(dramatiq.Message.decode(body))
        assert [m.message_id for m in received] == [m.message_id for m in sent]
        assert [list(m.args) for m in received] == [list(m.args) for m in sent]
    finally:
        broker.close()


def test_acks_from_worker_threads_go_out_in_one_group_and_stick(cluster_settings: Settings) -> None:
    """Worker threads' acks wake the consumer once per group (not per message) and are written
    by its next turn of the loop: after the consumer closes, RabbitMQ holds none of the messages
    (a lost ack would have the message back in the queue)."""
    import threading

    broker = make_broker(cluster_settings)
    sent = messages(cluster_settings, 40)
    queue = sent[0].queue_name
    try:
        amqp.publish_prepared(broker, amqp.prepare(broker, sent))
        consumer = broker.consume(queue, prefetch=len(sent), timeout=50)
        assert isinstance(consumer, amqp.GroupedAcks)
        received = []
        while len(received) < len(sent):
            message = next(consumer)
            if message is not None:
                received.append(message)
        scheduled = []
        connection = consumer.consumer.connection
        real = connection.add_callback_threadsafe
        connection.add_callback_threadsafe = lambda cb: (scheduled.append(cb), real(cb))
        workers = [
            threading.Thread(target=lambda part=received[i::4]: [consumer.ack(m) for m in part])
            for i in range(4)
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        assert len(scheduled) == 1  # 40 acks, one wake-up of the consumer thread
        assert next(consumer) is None  # the consumer's turn: the group's acks are queued, then written
        assert next(consumer) is None
        consumer.close()
        check = pika.BlockingConnection(pika.URLParameters(cluster_settings.broker_url))
        try:
            left = check.channel().queue_declare(queue, durable=True, passive=True).method.message_count
        finally:
            check.close()
        assert left == 0, f"{left} of {len(sent)} acked messages came back to the queue"
    finally:
        broker.close()


def _depth(settings: Settings, queue: str) -> int:
    check = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        return int(check.channel().queue_declare(queue, durable=True, passive=True).method.message_count)
    finally:
        check.close()


def _drain_ids(broker: dramatiq.Broker, queue: str) -> list[str]:
    channel = broker.channel  # type: ignore[attr-defined]
    ids = []
    while True:
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return ids
        ids.append(dramatiq.Message.decode(body).message_id)


def test_a_staged_batch_is_delivered_at_its_commit_and_once(cluster_settings: Settings) -> None:
    """Staged frames sit in the open transaction: RabbitMQ has read them (a round trip on the
    channel after them) and delivers none; the commit delivers each of them once."""
    broker = make_broker(cluster_settings)
    try:
        sent = messages(cluster_settings, 50) + messages(cluster_settings, 1, big=True)
        queue = sent[0].queue_name
        batch = amqp.prepare(broker, sent)
        amqp.stage(broker, batch)
        assert batch.staged
        batch.channel.basic_qos(prefetch_count=0)  # answered after RabbitMQ read every frame before it
        assert _depth(cluster_settings, queue) == 0
        amqp.publish_prepared(broker, batch)
        assert _depth(cluster_settings, queue) == len(sent)
        assert _drain_ids(broker, queue) == [m.message_id for m in sent]
    finally:
        broker.close()


def test_a_staged_batch_whose_connection_died_is_sent_whole_on_a_new_one(
    cluster_settings: Settings,
) -> None:
    """The transaction a batch was staged in dies with its connection (RabbitMQ discards it);
    the publish then marshals and sends the whole batch on a fresh connection: every message
    arrives, none twice."""
    broker = make_broker(cluster_settings)
    try:
        sent = messages(cluster_settings, 30)
        queue = sent[0].queue_name
        batch = amqp.prepare(broker, sent)
        amqp.stage(broker, batch)
        old = batch.channel
        old.connection.close()  # as if RabbitMQ had dropped it
        amqp.publish_prepared(broker, batch)
        assert batch.channel is not old
        assert _drain_ids(broker, queue) == [m.message_id for m in sent]
    finally:
        broker.close()


def test_a_batch_held_for_its_instant_is_staged_before_it_and_committed_at_it(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    """The scheduler's path (``publish_committed_batches``): a batch due later is written into
    its transaction before the wait, committed at its instant, and arrives once."""
    from datetime import timedelta

    from tickwork.lifecycle import CommittedBatch, publish_committed_batches
    from tickwork.vocabulary import utcnow

    broker = make_broker(cluster_settings)
    try:
        sent = messages(cluster_settings, 20)
        batch = amqp.prepare(broker, sent)
        due = utcnow() + timedelta(seconds=0.3)
        assert publish_committed_batches(
            mysql_engine, broker, [CommittedBatch(list(range(20)), batch, not_before=due)]
        ) == list(range(20))
        assert utcnow() >= due
        assert batch.staged  # written ahead; only tx.commit was left at the instant
        assert _drain_ids(broker, sent[0].queue_name) == [m.message_id for m in sent]
    finally:
        broker.close()
