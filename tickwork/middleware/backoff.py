"""Backoff: a failed attempt n becomes attempt n+1, a new row, after an exponential delay.

Replaces Dramatiq's ``Retries`` for tickwork messages (a second retrier beside ``Retries`` would
enqueue every failure twice, so ``Retries`` is not on the tickwork broker at all).
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from tickwork.messaging import HTTP_ACTOR, OPTION, RunOptions
from tickwork.middleware.attempt import (
    Attempt,
    current_attempt,
    describe_failure,
    failure_http_status,
    failure_traceback,
    write_with_retries,
)
from tickwork.store.attempts import finish_and_retry
from tickwork.store.runs import mark_enqueued
from tickwork.vocabulary import RunTrigger, utcnow

#: Up to this fraction of the delay is added at random, so retries of many runs spread out.
DEFAULT_JITTER = 0.1


def backoff_delay(
    attempt: int,
    backoff_seconds: float,
    max_backoff_seconds: float,
    *,
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after attempt ``attempt`` (1-based) failed.

    ``min(max_backoff, backoff * 2^(attempt-1))`` plus up to ``jitter`` of it: never negative and
    never earlier than the exponential delay itself.
    """
    exponent = max(attempt - 1, 0)
    # Cap the exponent so a huge attempt number cannot overflow a float.
    base = min(float(max_backoff_seconds), float(backoff_seconds) * 2.0 ** min(exponent, 64))
    base = max(base, 0.0)
    return base + (rng or random).uniform(0.0, base * max(jitter, 0.0))


def has_retries_left(options: RunOptions) -> bool:
    """Attempt n has used n-1 retries; another follows while that is below ``retry_count``."""
    return options["attempt"] <= options["retry_count"]


class Backoff(Middleware):
    """Retries failed tickwork attempts as new attempt rows after an exponential backoff.

    The failed attempt is finished and the next attempt inserted PENDING (with ``available_at``)
    in one transaction, then published with a delay. If the publish fails the PENDING row stays:
    it is the outbox, and the sweeper publishes it. Messages without tickwork options are left
    alone (they get no retries).

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
        attempt = current_attempt()
        if attempt is None or exception is None or attempt.settled:
            return
        if not has_retries_left(attempt.options):
            return  # DeadLetter takes it
        actor_jitter = broker.actors[message.actor_name].options.get("retry_jitter", self.jitter)
        self.retry(broker, message, attempt, exception, jitter=actor_jitter)

    def retry(
        self,
        broker: dramatiq.Broker,
        message: Any,
        attempt: Attempt,
        exception: BaseException,
        *,
        jitter: float,
    ) -> int | None:
        options = attempt.options
        delay = backoff_delay(
            options["attempt"],
            options["retry_backoff_seconds"],
            options["max_backoff_seconds"],
            jitter=jitter,
        )
        arguments = (
            None
            if message.actor_name == HTTP_ACTOR
            else {"args": list(message.args), "kwargs": dict(message.kwargs)}
        )
        # Settled whatever happens below: if the write fails even after retries, the attempt
        # stays RUNNING and leaves this worker's in-flight list, and the reaper retries it under
        # the same policy. Nobody else may turn it DEAD or FAILED meanwhile.
        attempt.settled = True
        try:
            new_id = write_with_retries(
                lambda: finish_and_retry(
                    self.engine,
                    options["run_id"],
                    attempt.worker_id,
                    job_id=options["job_id"],
                    scheduled_for=datetime.fromisoformat(options["scheduled_for"]),
                    next_attempt=options["attempt"] + 1,
                    available_at=utcnow() + timedelta(seconds=delay),
                    arguments=arguments,
                    output=getattr(exception, "output", None),
                    http_status=failure_http_status(exception, attempt),
                    error=describe_failure(exception, attempt.timeout_seconds),
                    traceback=failure_traceback(exception, attempt),
                ),
                what=f"the retry of run {options['run_id']}",
                logger=self.logger,
            )
        except Exception:
            self.logger.exception(
                "Recording the failure of run %s failed; the reaper will retry it.", options["run_id"]
            )
            return None
        if new_id is None:
            self.logger.warning(
                "Attempt %s of run %s was no longer ours to fail (reaped?); no retry from this worker.",
                options["attempt"],
                options["run_id"],
            )
            return None
        next_options = RunOptions(
            **{
                **options,
                "run_id": new_id,
                "attempt": options["attempt"] + 1,
                "trigger": RunTrigger.RETRY.value,
            }
        )  # type: ignore[typeddict-item]
        carried = {k: v for k, v in message.options.items() if k in ("time_limit", "max_retries")}
        next_message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=message.queue_name,
            actor_name=message.actor_name,
            args=tuple(message.args),
            kwargs=dict(message.kwargs),
            options={**carried, OPTION: next_options},
        )
        self.logger.info(
            "Job %s run %s attempt %s failed; attempt %s (run %s) in %.2f s.",
            options["job_name"],
            options["run_id"],
            options["attempt"],
            options["attempt"] + 1,
            new_id,
            delay,
        )
        try:
            broker.enqueue(next_message, delay=int(delay * 1000))
            mark_enqueued(self.engine, [new_id])
        except Exception:
            self.logger.exception(
                "Publishing retry run %s failed; its PENDING row stays for the outbox sweep.", new_id
            )
        return new_id
