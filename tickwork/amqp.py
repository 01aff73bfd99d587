"""RabbitMQ at pika's level: durable batch publishing, and acks sent in groups.

Publishing: the per-message work is done ahead of time.

A batch goes out on a transactional channel (``tx.select`` once, one ``tx.commit`` per batch):
when :func:`publish_prepared` returns, RabbitMQ has taken every message of the batch. Encoding
a message and marshalling its three AMQP frames costs ~60 µs of Python per message, and pika
writes each frame with its own ``send``: 1,000 messages took ~90 ms. :func:`prepare` does all
of that before the fire instant, so at the instant one buffer is written and committed (the
broker's own work, ~30-40 ms for 1,000 persistent messages on this 2-core machine).

The frames are marshalled for one channel of one connection; if the thread's connection or
channel changed meanwhile (a reconnect), the batch is marshalled again before it is sent.

A batch held for its instant can also be *staged* (:func:`stage`): its frames are written into
the channel's open transaction before the instant, so that RabbitMQ has read and parsed the
publishes by then and the instant only pays for ``tx.commit``. Nothing of a transaction is
delivered before its commit, and a lost connection or channel discards the staged publishes
with the transaction (the PENDING rows stay for the outbox sweep, as after any failed publish).

Acks: see :class:`GroupedAcks`. Deliveries: :func:`pin_fields`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import pika
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.common import current_millis, dq_name
from pika import frame, spec

_tx_channels = threading.local()


def tx_channel(broker: Any) -> Any:
    """This thread's transactional channel on the broker's (thread-local) connection."""
    channels: dict[int, tuple[Any, Any]] = getattr(_tx_channels, "by_broker", None) or {}
    _tx_channels.by_broker = channels
    connection = broker.connection
    if connection.is_closed:
        # RabbitMQ went away since the last batch (restart, a cut network): Dramatiq keeps the
        # thread's closed connection until someone deletes it.
        forget_channel(broker)
        channels = _tx_channels.by_broker
        connection = broker.connection
    cached = channels.get(id(broker))
    if cached is not None and cached[0] is connection and cached[1].is_open:
        return cached[1]
    channel = connection.channel()
    channel.tx_select()
    channels[id(broker)] = (connection, channel)
    return channel


def forget_channel(broker: Any) -> None:
    """Drop the thread's connection and channel so the next batch starts on fresh ones."""
    _tx_channels.by_broker = {}
    del broker.connection


@dataclass
class PreparedBatch:
    """Messages encoded and marshalled into AMQP frames for one channel, ready to send."""

    messages: list[dramatiq.Message[Any]]
    delay_ms: int | None
    routed: list[dramatiq.Message[Any]] = field(default_factory=list)
    data: bytes = b""
    channel: Any = None
    #: The frames are written into ``channel``'s open transaction (:func:`stage`).
    staged: bool = False


def prepare(
    broker: Any, messages: list[dramatiq.Message[Any]], *, delay_ms: int | None = None
) -> PreparedBatch:
    """Declare the queues, run the ``before_enqueue`` hooks and marshal every frame of the batch."""
    batch = PreparedBatch(messages=messages, delay_ms=delay_ms)
    try:
        for queue in {m.queue_name for m in messages}:
            broker.declare_queue(queue, ensure=True)
    except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError):
        forget_channel(broker)
        raise
    for message in messages:
        routed = message
        if delay_ms is not None:
            routed = message.copy(
                queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay_ms}
            )
        broker.emit_before("enqueue", routed, delay_ms)
        batch.routed.append(routed)
    try:
        _marshal(broker, batch)
    except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError):
        forget_channel(broker)  # the next batch starts on a fresh connection
        raise
    return batch


def _marshal(broker: Any, batch: PreparedBatch) -> None:
    """The batch's frames for this thread's channel (again after a reconnect)."""
    channel = tx_channel(broker)
    impl = channel._impl  # pika's asynchronous channel under the blocking one
    number = impl.channel_number
    max_body = impl.connection._body_max_length
    parts: list[bytes] = []
    for routed in batch.routed:
        body = routed.encode()
        properties = pika.BasicProperties(delivery_mode=2, priority=routed.options.get("broker_priority"))
        parts.append(
            frame.Method(number, spec.Basic.Publish(exchange="", routing_key=routed.queue_name)).marshal()
        )
        parts.append(frame.Header(number, len(body), properties).marshal())
        for start in range(0, len(body), max_body):
            parts.append(frame.Body(number, body[start : start + max_body]).marshal())
    batch.data = b"".join(parts)
    batch.channel = channel


def _open_channel(broker: Any, batch: PreparedBatch) -> Any:
    """This thread's transactional channel, with the batch marshalled for it (again after a
    reconnect: the frames name another channel, and a transaction the batch was staged in went
    with the old connection)."""
    channel = tx_channel(broker)
    if channel is not batch.channel:
        batch.staged = False
        _marshal(broker, batch)
        channel = batch.channel
    if not channel.is_open:
        raise pika.exceptions.ChannelWrongStateError("channel closed")
    return channel


def stage(broker: Any, batch: PreparedBatch) -> None:
    """Write a prepared batch into this thread's open transaction now; :func:`publish_prepared`
    then only commits it. Only one batch may be staged on a thread at a time (a transaction
    commits everything written into it), and nothing else may publish on the thread before
    that batch is committed."""
    if not batch.messages or batch.staged:
        return
    try:
        channel = _open_channel(broker, batch)
        channel._impl.connection._output_marshaled_frames([batch.data])
        batch.staged = True  # from here on the frames are the transaction's, sent or not
        channel.connection.process_data_events(time_limit=0)  # out of pika's buffer, onto the socket
    except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError):
        forget_channel(broker)
        raise


def publish_prepared(broker: Any, batch: PreparedBatch) -> None:
    """Send a prepared batch and commit it; raises if RabbitMQ did not take all of it."""
    if not batch.messages:
        return
    try:
        channel = _open_channel(broker, batch)
        if not batch.staged:
            # One write of every frame; tx.commit then waits until RabbitMQ has the whole batch.
            channel._impl.connection._output_marshaled_frames([batch.data])
        channel.tx_commit()
    except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError):
        forget_channel(broker)
        raise
    for routed in batch.routed:
        broker.emit_after("enqueue", routed, batch.delay_ms)


def pin_fields(proxy: MessageProxy) -> None:
    """Copy the message's fields onto its delivery proxy, where attribute lookup finds them.

    ``MessageProxy`` reads every field through ``__getattr__`` (a Python call, ~0.5 µs), and a
    tickwork worker reads them ~18 times per message (its middleware and Dramatiq's): ~8 µs per
    message, against ~0.25 µs for the copy. The message itself is a frozen dataclass, so the
    copies cannot go stale; ``options`` stays the same dict.
    """
    message = proxy._message
    fields = vars(proxy)
    fields["queue_name"] = message.queue_name
    fields["actor_name"] = message.actor_name
    fields["args"] = message.args
    fields["kwargs"] = message.kwargs
    fields["options"] = message.options
    fields["message_id"] = message.message_id
    fields["message_timestamp"] = message.message_timestamp


class GroupedAcks(Consumer):
    """Dramatiq's RabbitMQ consumer with the acks of finished messages sent in groups.

    Dramatiq's consumer hands each ack to the consumer thread as its own callback (one wake-up
    of the thread's poller per message) and sends it with ``BlockingChannel.basic_ack``, which
    then runs the I/O loop until the frame is written: a ``poll`` and a ``send`` per message,
    a third of bare Dramatiq's worker CPU in a drain. Here the worker threads collect the
    delivery tags; the first tag of a group schedules one callback, which queues every tag
    collected by then on the channel, and the consumer's next turn of the loop writes them
    together. An ack is sent no later than with Dramatiq (the thread is woken as before); one
    not yet written when the connection drops is lost like any unsent ack: RabbitMQ redelivers
    the message and the worker's claim turns the copy away. Everything else is the wrapped
    consumer's.
    """

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self._tags: list[int] = []
        self._lock = threading.Lock()

    @staticmethod
    def wraps(consumer: Any) -> bool:
        """Whether ``consumer`` is one this class knows how to ack for (Dramatiq's pika consumer)."""
        return all(hasattr(consumer, name) for name in ("known_tags", "connection", "channel"))

    def __next__(self) -> MessageProxy | None:
        message: MessageProxy | None = next(self.consumer)
        if message is not None:
            pin_fields(message)
        return message

    def ack(self, message: MessageProxy) -> None:
        tag = message._tag
        try:
            self.consumer.known_tags.remove(tag)
        except KeyError:
            self.consumer.logger.warning("Failed to ack message: not in known tags.")
            return
        with self._lock:
            self._tags.append(tag)
            if len(self._tags) > 1:
                return  # the group's callback is already scheduled
        try:
            self.consumer.connection.add_callback_threadsafe(self._send)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            with self._lock:
                self._tags.clear()  # the channel is gone, and its tags with it
            raise dramatiq.errors.ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _send(self) -> None:
        """On the consumer thread: queue the group's acks; the I/O loop's next turn writes them."""
        with self._lock:
            tags, self._tags = self._tags, []
        impl = self.consumer.channel._impl
        for tag in tags:
            impl.basic_ack(delivery_tag=tag)

    def nack(self, message: MessageProxy) -> None:
        self.consumer.nack(message)

    def requeue(self, messages: Any) -> None:
        self.consumer.requeue(messages)

    def close(self) -> None:
        self.consumer.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)
