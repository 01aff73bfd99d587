"""After RabbitMQ went away and came back, the publisher and the queue-depth probe reconnect.

Dramatiq keeps each thread's connection and channel until someone deletes them: a scheduler
thread that kept a dead one would fail every publish (the outbox then carries every fire a
grace period late), and the outbox sweep's queue-depth probe would answer "unknown" forever
(published but lost attempts would wait the backlog limit, 10 grace periods). Runs on a private
RabbitMQ node (tests/private_services.py), never the shared one.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import dramatiq
import pytest

from tests.conftest import IN_CI, RUN_ID
from tests.private_services import PrivateRabbitMQ, available
from tickwork.config import load_settings
from tickwork.messaging import make_broker, publish, ready_messages

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

T = TypeVar("T")


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[PrivateRabbitMQ]:
    missing = available()
    if missing:
        if IN_CI:
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    server = PrivateRabbitMQ(Path(tempfile.mkdtemp(prefix=f"tickwork-rabbit-{RUN_ID}-")))
    try:
        server.start()
        yield server
    finally:
        server.close()


def within_two_calls(fn: Callable[[], T]) -> T:
    """The first call after the outage may fail (that is how a dead connection is noticed)."""
    try:
        return fn()
    except Exception:
        return fn()


def test_publish_and_queue_depth_reconnect_after_a_broker_restart(rabbitmq: PrivateRabbitMQ) -> None:
    namespace = f"twtest_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    settings = load_settings(broker_url=rabbitmq.url, namespace=namespace)
    broker = make_broker(settings)
    queue = f"{namespace}.default"

    def message(n: int) -> dramatiq.Message[object]:
        return dramatiq.Message(queue_name=queue, actor_name="tw_noop", args=(n,), kwargs={}, options={})

    try:
        publish(broker, [message(1)])
        assert ready_messages(broker, queue) == 1
        rabbitmq.stop_app()
        assert ready_messages(broker, queue) is None  # unknown while it is away, not an error
        rabbitmq.start_app()
        # The probe answers again by its second call at the latest (it used to stay None).
        depths = [ready_messages(broker, queue), ready_messages(broker, queue)]
        assert depths[-1] == 1, depths  # the persistent message survived the restart
        within_two_calls(lambda: publish(broker, [message(2), message(3)]))
        publish(broker, [message(4)])  # and keeps working
        assert ready_messages(broker, queue) == 4
    finally:
        try:
            rabbitmq.ensure_running()
            del broker.connection
            channel = broker.channel
            channel.queue_delete(queue)
        finally:
            broker.close()
