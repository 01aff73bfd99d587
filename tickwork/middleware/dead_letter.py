"""DeadLetter: a run whose retries are spent is marked DEAD and put in a durable DLQ.

The database is the source of truth (``job_runs.status = 'DEAD'``); the RabbitMQ queue
``dlq_name(settings)`` carries a JSON copy (run, job, attempt, last error) for tools that read
queues. In-process (embedded) mode keeps the DLQ in the database only. The decision and its
records are :mod:`tickwork.lifecycle`'s; administering the DLQ (list, replay, purge) is
:mod:`tickwork.dlq`'s, re-exported here for old imports.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.dlq import DEFAULT_DLQ_SCAN_LIMIT, dlq_messages, list_dead, purge, replay
from tickwork.lifecycle import Dead, has_retries_left, publish_dead_letter, settle_failure
from tickwork.middleware.attempt import attempt_of, failed_attempt, failure_of, write_with_retries

__all__ = [
    "DEFAULT_DLQ_SCAN_LIMIT",
    "DeadLetter",
    "dlq_messages",
    "list_dead",
    "publish_dead_letter",
    "purge",
    "replay",
]


class DeadLetter(Middleware):
    """Marks a failed tickwork attempt DEAD when Backoff did not retry it, and publishes it to the DLQ.

    Parameters:
      settings: names the DLQ (``dlq_name``) and says whether RabbitMQ is in use.
      engine: the store.
    """

    def __init__(self, *, settings: Settings, engine: Engine) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.settings = settings
        self.engine = engine

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        attempt = attempt_of(message)
        if attempt is None or exception is None or attempt.settled:
            return
        options = attempt.options
        if has_retries_left(options["attempt"], options["retry_count"]):
            return  # Backoff's: a run with retries left is never dead
        failure = failure_of(exception, attempt)
        attempt.settled = True
        try:
            settled = settle_failure(
                self.settings,
                self.engine,
                broker,
                failed_attempt(message, attempt),
                failure,
                step=Dead(),
                next_message=_no_retry,
                write=lambda fn, what: write_with_retries(fn, what=what, logger=self.logger),
            )
        except Exception:
            self.logger.exception("Marking run %s DEAD failed; the reaper will settle it.", options["run_id"])
            return
        if not settled.recorded:
            self.logger.warning("Run %s was no longer ours to mark DEAD (reaped?).", options["run_id"])
            return
        self.logger.warning(
            "Job %s run %s attempt %s failed with no retries left: DEAD (%s).",
            options["job_name"],
            options["run_id"],
            options["attempt"],
            failure.error,
        )


def _no_retry(run_id: int, step: Any) -> dramatiq.Message[Any]:
    raise AssertionError("a dead run has no next attempt")
