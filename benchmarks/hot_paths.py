"""Python cost of tickwork's two hot paths without services, to compare code before and after a
refactoring on a machine too loaded for the end-to-end benchmarks to tell a few per cent apart.

1. worker: one successful message through the worker's whole middleware list, dispatched by the
   broker's signals as Dramatiq's worker thread does (``process_message`` and ``ack``, before and
   after, and the actor itself); RunLog's recorder is replaced by one that answers at once;
2. scheduler: one fire's job snapshot and message (``store.fires._job_snapshot`` and
   ``messaging.build_message``).

    PYTHONPATH=. .venv/bin/python benchmarks/hot_paths.py

Run it in two checkouts (``PYTHONPATH`` pointing at each) and compare; prints the best of 5.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from sqlalchemy import create_engine

from tickwork.amqp import pin_fields
from tickwork.config import load_settings
from tickwork.messaging import build_message, make_broker
from tickwork.middleware.run_log import RunLog
from tickwork.store import fires
from tickwork.worker import build_middleware

OPTIONS = {
    "run_id": 1,
    "job_id": 1,
    "job_name": "j",
    "attempt": 1,
    "scheduled_for": "2026-01-01T00:00:00+00:00",
    "retry_count": 3,
    "retry_backoff_seconds": 1,
    "max_backoff_seconds": 10,
    "timeout_seconds": None,
}
JOB_ROW = {
    "id": 1,
    "name": "j",
    "cron_expression": "* * * * * *",
    "run_at": None,
    "timezone": "UTC",
    "handler_type": "http",
    "handler_data": "http://127.0.0.1/x",
    "parameters": None,
    "retry_count": 0,
    "retry_backoff_seconds": 10,
    "max_backoff_seconds": 3600,
    "timeout_seconds": None,
    "queue": "default",
    "misfire_policy": "fire_once",
    "misfire_grace_seconds": None,
    "overlap_policy": "allow",
    "max_concurrency": None,
    "next_fire_at": None,
    "version": 1,
}


class StubRecorder:
    """The recorder answering at once: the hooks' own cost, without MySQL or the hand-off."""

    def claim(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def finish(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def finish_later(self, run_id: int, worker_id: str, then: Callable[..., None], **kwargs: Any) -> None:
        then(True, None)


def best_microseconds(step: Callable[[int], object], count: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for i in range(count):
            step(i)
        best = min(best, (time.perf_counter() - start) / count * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--fires", type=int, default=20_000)
    args = parser.parse_args()
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'unused.db'}"
    settings = load_settings(database_url=url, namespace="hot-paths")
    engine = create_engine("sqlite://")
    broker = make_broker(settings, middleware=build_middleware(settings, engine))
    for middleware in broker.middleware:
        if isinstance(middleware, RunLog):
            middleware.recorder = StubRecorder()  # type: ignore[assignment]
    broker.emit_after("process_boot")  # TimeLimit's deadline thread

    @dramatiq.actor(actor_name="noop", queue_name="q", broker=broker)
    def noop() -> None:
        return None

    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="q", actor_name="noop", args=(), kwargs={}, options={"tickwork": OPTIONS}
    )

    def one_message(_: int) -> None:
        # What Dramatiq's WorkerThread.process_message and the consumer's ack do around the actor.
        proxy = MessageProxy(message)
        pin_fields(proxy)  # as tickwork's RabbitMQ consumer hands it over
        broker.emit_before("process_message", proxy)
        result = noop(*proxy.args, **proxy.kwargs)
        broker.emit_after("process_message", proxy, result=result)
        broker.emit_before("ack", proxy)
        broker.emit_after("ack", proxy)

    now = datetime.now(UTC)

    def one_fire(i: int) -> None:
        build_message(settings, fires._job_snapshot(JOB_ROW), run_id=i, attempt=1, scheduled_for=now)

    print(f"worker hooks, one successful message: {best_microseconds(one_message, args.messages):.2f} µs")
    print(f"scheduler, one fire's snapshot and message: {best_microseconds(one_fire, args.fires):.2f} µs")


if __name__ == "__main__":
    main()
