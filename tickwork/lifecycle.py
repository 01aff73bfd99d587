"""What happens after an attempt: retry or dead (with the DLQ copy), and publish after commit.

This is the one home of the guarantees that follow an attempt (docs/design.md, guarantees 2, 4
and 5). Its callers are thin: the ``Backoff`` and ``DeadLetter`` middleware (an attempt that
raised), the scheduler's reaper (an attempt whose worker is gone) and the operations that write
a run and publish it (run now, replay, republish).

Retry or dead
    :func:`next_step` decides, as a pure function: attempt *n* has used *n-1* retries, so
    another attempt follows while ``n <= retry_count``, after
    ``min(max_backoff, backoff · 2^(n-1))`` plus up to ``jitter`` of it (:func:`backoff_delay`).
    :func:`settle_failure` records the decision: attempt *n* FAILED and attempt *n+1* PENDING in
    one transaction, then published with its delay; or attempt *n* DEAD, then a JSON copy on
    the dead-letter queue. Both writes are compare-and-set on the worker that held the attempt,
    so a worker and a reaper racing over one attempt settle it once.

Publish after commit
    :func:`publish_committed` publishes attempts whose PENDING rows are committed, then marks
    them enqueued. A failed publish is logged and not raised: the PENDING row is the outbox and
    the scheduler's outbox sweep publishes it (raising would invite a caller to write the run
    again, and it would then run twice).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import dramatiq
from sqlalchemy import Engine

from tickwork.amqp import PreparedBatch
from tickwork.config import Settings
from tickwork.messaging import build_message, dlq_name, prepare_publish, publish_batch, stage_batch
from tickwork.store.alerts import finish_dead
from tickwork.store.attempts import finish_and_retry
from tickwork.store.models import Job
from tickwork.store.runs import insert_run, mark_enqueued
from tickwork.vocabulary import RunTrigger, utcnow

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Up to this fraction of the delay is added at random, so retries of many runs spread out.
DEFAULT_JITTER = 0.1


# -- the decision (pure) ---------------------------------------------------------------------


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


def has_retries_left(attempt: int, retry_count: int) -> bool:
    """Attempt n has used n-1 retries; another follows while that is below ``retry_count``."""
    return attempt <= retry_count


@dataclass(frozen=True)
class Retry:
    """Attempt ``next_attempt`` follows after ``delay`` seconds."""

    next_attempt: int
    delay: float


@dataclass(frozen=True)
class Dead:
    """Retries spent: the run is dead (and goes to the dead-letter queue)."""


def next_step(
    attempt: int,
    retry_count: int,
    backoff_seconds: float,
    max_backoff_seconds: float,
    *,
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> Retry | Dead:
    """What follows failed attempt ``attempt`` of a job with this retry policy."""
    if not has_retries_left(attempt, retry_count):
        return Dead()
    return Retry(
        next_attempt=attempt + 1,
        delay=backoff_delay(attempt, backoff_seconds, max_backoff_seconds, jitter=jitter, rng=rng),
    )


# -- recording it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedAttempt:
    """The failed attempt: what the decision and its records need, with no read of the store.

    ``arguments`` are the ones the next attempt's row keeps; ``actor_name`` and ``queue_name``
    name where the attempt ran (the dead letter says so).
    """

    run_id: int
    worker_id: str
    job_id: int
    job_name: str
    attempt: int
    scheduled_for: datetime
    retry_count: int
    retry_backoff_seconds: int
    max_backoff_seconds: int
    arguments: dict[str, Any] | None
    actor_name: str
    queue_name: str


@dataclass(frozen=True)
class Failure:
    """How the attempt failed, as recorded in its row."""

    error: str
    output: str | None = None
    http_status: int | None = None
    traceback: str | None = None


@dataclass(frozen=True)
class Settled:
    """What :func:`settle_failure` did.

    ``recorded`` is False when the attempt was no longer this caller's to fail (another worker
    or a reaper settled it first); ``retry_run_id`` is the next attempt's run id after a retry.
    """

    step: Retry | Dead
    recorded: bool
    retry_run_id: int | None = None


def _write_once(write: Callable[[], T], what: str) -> T:
    return write()


def settle_failure(
    settings: Settings | None,
    engine: Engine,
    broker: dramatiq.Broker,
    failed: FailedAttempt,
    failure: Failure,
    *,
    next_message: Callable[[int, Retry], dramatiq.Message[Any]] | None = None,
    step: Retry | Dead | None = None,
    jitter: float = DEFAULT_JITTER,
    write: Callable[[Callable[[], Any], str], Any] = _write_once,
) -> Settled:
    """Decide (:func:`next_step`, unless ``step`` is given) and record a failed attempt.

    Retry: attempt n FAILED and attempt n+1 PENDING (``available_at`` after the delay) in one
    transaction, then ``next_message(new_run_id, step)`` published with the delay after the
    commit (:func:`publish_committed`; a caller that passes ``step=Dead()`` may omit it).
    Dead: attempt n DEAD, then its JSON copy on the dead-letter queue (named by ``settings``:
    a caller that only retries may pass None).
    ``write`` runs the database write (the worker passes one that waits out
    a database outage); a write that fails raises, and the attempt stays RUNNING for the reaper.
    """
    if step is None:
        step = next_step(
            failed.attempt,
            failed.retry_count,
            failed.retry_backoff_seconds,
            failed.max_backoff_seconds,
            jitter=jitter,
        )
    if isinstance(step, Retry):
        if next_message is None:
            raise ValueError("a retry needs next_message to build the next attempt's message")
        retry = step
        new_id = write(
            lambda: finish_and_retry(
                engine,
                failed.run_id,
                failed.worker_id,
                job_id=failed.job_id,
                scheduled_for=failed.scheduled_for,
                next_attempt=retry.next_attempt,
                available_at=utcnow() + timedelta(seconds=retry.delay),
                arguments=failed.arguments,
                output=failure.output,
                http_status=failure.http_status,
                error=failure.error,
                traceback=failure.traceback,
            ),
            f"the retry of run {failed.run_id}",
        )
        if new_id is None:
            return Settled(step=step, recorded=False)
        publish_committed(
            engine, broker, [new_id], [next_message(new_id, retry)], delay_ms=int(retry.delay * 1000)
        )
        return Settled(step=step, recorded=True, retry_run_id=new_id)
    # DEAD, and in the same transaction what follows a dead run (issue 13): ``run.dead`` and,
    # after ``pauseAfterFailures`` dead runs in a row, the auto-pause with ``job.paused``.
    dead = write(
        lambda: finish_dead(
            engine,
            failed.run_id,
            failed.worker_id,
            notify_url=settings.notify_url if settings is not None else None,
            output=failure.output,
            http_status=failure.http_status,
            error=failure.error,
            traceback=failure.traceback,
        ),
        f"the dead letter of run {failed.run_id}",
    )
    if not dead:
        return Settled(step=step, recorded=False)
    if settings is None:
        raise ValueError("a dead letter needs the settings that name the dead-letter queue")
    publish_dead_letter(settings, broker, dead_letter_payload(failed, error=failure.error))
    return Settled(step=step, recorded=True)


def dead_letter_payload(failed: FailedAttempt, *, error: str) -> dict[str, Any]:
    """The JSON copy of a dead run on the dead-letter queue."""
    return {
        "run_id": failed.run_id,
        "job_id": failed.job_id,
        "job_name": failed.job_name,
        "attempt": failed.attempt,
        "scheduled_for": failed.scheduled_for.isoformat(),
        "actor_name": failed.actor_name,
        "queue_name": failed.queue_name,
        "error": error,
        "dead_at": utcnow().isoformat(),
    }


def publish_dead_letter(settings: Settings, broker: dramatiq.Broker, payload: dict[str, Any]) -> None:
    """Put a JSON dead letter on the durable DLQ (RabbitMQ only); failures are logged, the row stays DEAD."""
    if settings.embedded_broker:
        return
    import pika

    body = json.dumps(payload).encode()
    for attempt in range(2):
        try:
            channel = broker.channel  # type: ignore[attr-defined]  # the thread's RabbitMQ channel
            channel.queue_declare(queue=dlq_name(settings), durable=True)
            channel.basic_publish(
                exchange="",
                routing_key=dlq_name(settings),
                body=body,
                properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"),
            )
            return
        except Exception:
            del broker.connection  # type: ignore[attr-defined]  # reconnect on the next try
            if attempt == 1:
                logger.exception("Publishing the dead letter of run %s failed.", payload.get("run_id"))


# -- publish after commit ------------------------------------------------------------------------


@dataclass
class CommittedBatch:
    """Attempts whose PENDING rows are committed, prepared for one publish.

    ``not_before``: the batch is held until then (rows written ahead of their fire instant).
    """

    run_ids: list[int]
    batch: PreparedBatch
    not_before: datetime | None = None


def publish_committed(
    engine: Engine,
    broker: dramatiq.Broker,
    run_ids: list[int],
    messages: list[dramatiq.Message[Any]],
    *,
    delay_ms: int | None = None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Publish committed attempts as one durable batch, then mark them enqueued.

    Returns True when published. A failure is logged, not raised: the rows stay PENDING for the
    outbox sweep.
    """
    try:
        batch = prepare_publish(broker, messages, delay_ms=delay_ms)
    except Exception:
        logger.warning(
            _PUBLISH_FAILED, *_ids(run_ids), extra={**(extra or {}), "run_id": run_ids[0]}, exc_info=True
        )
        return False
    return bool(publish_committed_batches(engine, broker, [CommittedBatch(run_ids, batch)], extra=extra))


def publish_committed_batches(
    engine: Engine,
    broker: dramatiq.Broker,
    batches: Sequence[CommittedBatch],
    *,
    extra: dict[str, Any] | None = None,
) -> list[int]:
    """Send prepared batches in order, each durable before the next, then mark them enqueued.

    A batch held for a later instant is written into its transaction before the wait
    (:func:`tickwork.messaging.stage_batch`), so that only the commit is left at the instant
    (alternating scheduling runs at 1,000 fires/s: the median instant's publish lag 63 against
    75 ms, docs/scheduler.md); the batches before it are committed by then. The ``enqueued_at``
    writes come after the last batch (each with its own publish time) so they do not delay it.
    A failed batch is logged and left PENDING. Returns the run ids sent.
    """
    sent: list[tuple[list[int], datetime]] = []
    for committed in batches:
        if committed.not_before is not None and committed.not_before > utcnow():
            try:
                stage_batch(broker, committed.batch)
            except Exception:  # sent whole at the instant instead
                logger.warning(
                    _STAGE_FAILED, extra={**(extra or {}), "run_id": committed.run_ids[0]}, exc_info=True
                )
            wait = (committed.not_before - utcnow()).total_seconds()
            if wait > 0:
                time.sleep(wait)
        try:
            publish_batch(broker, committed.batch)
        except Exception:
            logger.warning(
                _PUBLISH_FAILED,
                *_ids(committed.run_ids),
                extra={**(extra or {}), "run_id": committed.run_ids[0]},
                exc_info=True,
            )
        else:
            sent.append((committed.run_ids, utcnow()))
    for run_ids, when in sent:
        mark_enqueued(engine, run_ids, now=when)
    return [run_id for run_ids, _ in sent for run_id in run_ids]


_PUBLISH_FAILED = "Publishing run %s%s failed; it stays PENDING for the outbox sweep."
_STAGE_FAILED = "Sending a batch ahead of its instant failed; it is sent whole at the instant."


def _ids(run_ids: list[int]) -> tuple[int, str]:
    return run_ids[0], f" (and {len(run_ids) - 1} more)" if len(run_ids) > 1 else ""


def fire_now(
    settings: Settings,
    engine: Engine,
    broker: dramatiq.Broker | None,
    job: Job,
    *,
    trigger: RunTrigger = RunTrigger.MANUAL,
    arguments: dict[str, Any] | None = None,
) -> int:
    """Run ``job`` now, outside its schedule: write the PENDING row (the outbox), then publish.

    Returns the run id once the row is committed. A failed publish is logged, not raised (see
    :func:`publish_committed`). Without a broker (``None``: the embedded mode outside
    `tickwork dev`) the row is left unpublished for the sweep of the process that owns the
    in-process broker, which publishes never-published rows within seconds.
    """
    now = utcnow()
    run_id = insert_run(
        engine, job_id=job.id, scheduled_for=now, trigger=trigger, arguments=arguments, now=now
    )
    if broker is None:
        logger.info("Run %s of job %s is PENDING for `tickwork dev` to publish.", run_id, job.name)
        return run_id
    message = build_message(
        settings, job, run_id=run_id, attempt=1, scheduled_for=now, arguments=arguments, trigger=trigger
    )
    publish_committed(engine, broker, [run_id], [message], extra={"job_id": job.id})
    return run_id
