"""Backoff: a failed attempt n becomes attempt n+1, a new row, after an exponential delay.

Replaces Dramatiq's ``Retries`` for tickwork messages (a second retrier beside ``Retries`` would
enqueue every failure twice, so ``Retries`` is not on the tickwork broker at all). The decision
and its records are :mod:`tickwork.lifecycle`'s; this middleware hands it the failed attempt.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from tickwork.lifecycle import (
    DEFAULT_JITTER,
    Retry,
    backoff_delay,
    next_step,
    settle_failure,
)
from tickwork.lifecycle import has_retries_left as _has_retries_left
from tickwork.messaging import RunOptions, retry_message
from tickwork.middleware.attempt import (
    ClaimedAttempt,
    attempt_of,
    failed_attempt,
    failure_of,
    write_with_retries,
)

__all__ = ["DEFAULT_JITTER", "Backoff", "backoff_delay", "has_retries_left"]


def has_retries_left(options: RunOptions) -> bool:
    """Attempt n has used n-1 retries; another follows while that is below ``retry_count``."""
    return _has_retries_left(options["attempt"], options["retry_count"])


class Backoff(Middleware):
    """Retries failed tickwork attempts as new attempt rows after an exponential backoff.

    The failed attempt is finished and the next attempt inserted PENDING (with ``available_at``)
    in one transaction, then published with a delay (:func:`tickwork.lifecycle.settle_failure`).
    If the publish fails the PENDING row stays: it is the outbox, and the sweeper publishes it.
    Messages without tickwork options are left alone (they get no retries).

    Parameters:
      engine: the store.
      jitter: the fraction of each delay added at random (0 disables jitter).
    """

    def __init__(self, *, engine: Engine, jitter: float = DEFAULT_JITTER) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.engine = engine
        self.jitter = jitter

    @property
    def actor_options(self) -> set[str]:
        return {"retry_jitter"}

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
        jitter = broker.actors[message.actor_name].options.get("retry_jitter", self.jitter)
        step = next_step(
            options["attempt"],
            options["retry_count"],
            options["retry_backoff_seconds"],
            options["max_backoff_seconds"],
            jitter=jitter,
        )
        if isinstance(step, Retry):
            self.retry(broker, message, attempt, exception, step)
        # else: DeadLetter's (a run with no retries left is dead)

    def retry(
        self,
        broker: dramatiq.Broker,
        message: Any,
        attempt: ClaimedAttempt,
        exception: BaseException,
        step: Retry,
    ) -> int | None:
        options = attempt.options
        # Settled whatever happens below: if the write fails even after retries, the attempt
        # stays RUNNING and leaves this worker's in-flight list, and the reaper retries it under
        # the same policy. Nobody else may turn it DEAD or FAILED meanwhile.
        attempt.settled = True
        try:
            settled = settle_failure(
                None,  # a retry names no dead-letter queue
                self.engine,
                broker,
                failed_attempt(message, attempt),
                failure_of(exception, attempt),
                step=step,
                next_message=lambda new_id, retry: retry_message(
                    message, run_id=new_id, attempt=retry.next_attempt
                ),
                write=lambda fn, what: write_with_retries(fn, what=what, logger=self.logger),
            )
        except Exception:
            self.logger.exception(
                "Recording the failure of run %s failed; the reaper will retry it.", options["run_id"]
            )
            return None
        if not settled.recorded:
            self.logger.warning(
                "Attempt %s of run %s was no longer ours to fail (reaped?); no retry from this worker.",
                options["attempt"],
                options["run_id"],
            )
            return None
        self.logger.info(
            "Job %s run %s attempt %s failed; attempt %s (run %s) in %.2f s.",
            options["job_name"],
            options["run_id"],
            options["attempt"],
            step.next_attempt,
            settled.retry_run_id,
            step.delay,
        )
        return settled.retry_run_id
