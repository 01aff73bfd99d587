"""LogContext on Dramatiq's StubBroker: lines logged during an attempt carry its ids, and only then."""

from __future__ import annotations

import json
import logging
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

from tickwork.config.logging import JsonFormatter
from tickwork.middleware.log_context import LogContext

pytestmark = pytest.mark.unit

QUEUE = "twtest.default"


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


class Chatty(Middleware):
    """Stands in for RunLog/Backoff: logs in its after hook, which runs before LogContext's."""

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        logging.getLogger("tickwork.test.chatty").warning("attempt finished")


def test_ids_on_every_line_of_an_attempt_and_none_after() -> None:
    recorder = Recorder()
    logger = logging.getLogger("tickwork.test")
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    broker = StubBroker(middleware=[LogContext(worker_id=lambda: "w-7"), Chatty()])
    broker.emit_after("process_boot")

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="work")
    def work() -> None:
        logging.getLogger("tickwork.test.handler").info("handler says hi")

    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        options = {"tickwork": {"run_id": 41, "job_id": 3, "job_name": "nightly", "attempt": 2}}
        message = dramatiq.Message(queue_name=QUEUE, actor_name="work", args=(), kwargs={}, options=options)
        broker.enqueue(message)
        broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name="work", args=(), kwargs={}, options={}))
        broker.join(QUEUE)
        worker.join()
    finally:
        worker.stop()
        broker.close()
        logger.removeHandler(recorder)
    tagged, plain = recorder.lines[:2], recorder.lines[2:]
    for line in tagged:
        assert (line["run_id"], line["job_id"], line["job_name"], line["attempt"]) == (41, 3, "nightly", 2)
        assert line["worker_id"] == "w-7" and line["message_id"] == message.message_id
    assert [line["event"] for line in tagged] == ["handler says hi", "attempt finished"]
    # The plain Dramatiq message that followed on the same thread carries no stale ids.
    assert plain and all("run_id" not in line for line in plain)
