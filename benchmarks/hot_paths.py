"""Python cost of tickwork's two hot paths without services, to compare code before and after a
refactoring on a machine too loaded for the end-to-end benchmarks to tell a few per cent apart.

1. worker: one message through the middleware hooks of a successful attempt (RunLog's claim and
   finish are stubbed; Backoff and DeadLetter see no failure);
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

from tickwork.config import load_settings
from tickwork.messaging import build_message
from tickwork.middleware.backoff import Backoff
from tickwork.middleware.dead_letter import DeadLetter
from tickwork.middleware.run_log import RunLog
from tickwork.store import fires

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
    "next_fire_at": None,
    "version": 1,
}


class StubRecorder:
    def claim(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def finish(self, *args: Any, **kwargs: Any) -> bool:
        return True


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
    run_log = RunLog(engine=engine, worker_id=lambda: "w1")
    run_log.recorder = StubRecorder()  # type: ignore[assignment]
    backoff = Backoff(engine=engine)
    dead_letter = DeadLetter(settings=settings, engine=engine)
    message = dramatiq.Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={"tickwork": OPTIONS}
    )
    broker: Any = None

    def one_message(_: int) -> None:
        proxy = MessageProxy(message)
        run_log.before_process_message(broker, proxy)
        backoff.after_process_message(broker, proxy, result=1)
        dead_letter.after_process_message(broker, proxy, result=1)
        run_log.after_process_message(broker, proxy, result=1)

    now = datetime.now(UTC)

    def one_fire(i: int) -> None:
        build_message(settings, fires._job_snapshot(JOB_ROW), run_id=i, attempt=1, scheduled_for=now)

    print(f"worker hooks, one successful message: {best_microseconds(one_message, args.messages):.2f} µs")
    print(f"scheduler, one fire's snapshot and message: {best_microseconds(one_fire, args.fires):.2f} µs")


if __name__ == "__main__":
    main()
