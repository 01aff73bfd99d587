"""DeadLetter: a run whose retries are spent is marked DEAD and put in a durable DLQ.

The database is the source of truth (``job_runs.status = 'DEAD'``); the RabbitMQ queue
``dlq_name(settings)`` carries a JSON copy (run, job, attempt, last error) for tools that read
queues. In-process (embedded) mode keeps the DLQ in the database only.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.messaging import build_message, dlq_name, publish
from tickwork.middleware.attempt import (
    current_attempt,
    describe_failure,
    failure_http_status,
    failure_traceback,
    write_with_retries,
)
from tickwork.middleware.backoff import has_retries_left
from tickwork.store.alerts import finish_dead
from tickwork.store.attempts import discard_dead_runs, list_dead_runs, replay_dead_run
from tickwork.store.jobs import get_job
from tickwork.store.models import JobRun, RunTrigger, utcnow
from tickwork.store.runs import mark_enqueued

logger = logging.getLogger(__name__)

#: How many DLQ messages one purge or replay looks at, at most.
DEFAULT_DLQ_SCAN_LIMIT = 100_000


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
        attempt = current_attempt()
        if attempt is None or exception is None or attempt.settled:
            return
        if has_retries_left(attempt.options):
            return  # Backoff's: a run with retries left is never dead
        error = describe_failure(exception, attempt.timeout_seconds)
        options = attempt.options
        attempt.settled = True
        try:
            dead = write_with_retries(
                # Issue 13 hook: DEAD, run.dead and the auto-pause in one transaction.
                lambda: finish_dead(
                    self.engine,
                    options["run_id"],
                    attempt.worker_id,
                    notify_url=self.settings.notify_url,
                    output=getattr(exception, "output", None),
                    http_status=failure_http_status(exception, attempt),
                    error=error,
                    traceback=failure_traceback(exception, attempt),
                ),
                what=f"the dead letter of run {options['run_id']}",
                logger=self.logger,
            )
        except Exception:
            self.logger.exception("Marking run %s DEAD failed; the reaper will settle it.", options["run_id"])
            return
        if not dead:
            self.logger.warning("Run %s was no longer ours to mark DEAD (reaped?).", options["run_id"])
            return
        self.logger.warning(
            "Job %s run %s attempt %s failed with no retries left: DEAD (%s).",
            options["job_name"],
            options["run_id"],
            options["attempt"],
            error,
        )
        publish_dead_letter(
            self.settings,
            broker,
            dead_letter_payload(
                options, error=error, actor_name=message.actor_name, queue_name=message.queue_name
            ),
        )


def dead_letter_payload(options: Any, *, error: str, actor_name: str, queue_name: str) -> dict[str, Any]:
    return {
        "run_id": options["run_id"],
        "job_id": options["job_id"],
        "job_name": options["job_name"],
        "attempt": options["attempt"],
        "scheduled_for": options["scheduled_for"],
        "actor_name": actor_name,
        "queue_name": queue_name,
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


def list_dead(
    engine: Engine, *, job_id: int | None = None, limit: int = 50, before_id: int | None = None
) -> list[JobRun]:
    """Dead runs (their last attempt row, with its error), newest first."""
    return list_dead_runs(engine, job_id=job_id, limit=limit, before_id=before_id)


def replay(settings: Settings, engine: Engine, broker: dramatiq.Broker, run_id: int) -> int:
    """Run a dead run again: DEAD → REPLAYED, a new PENDING attempt (max + 1), published now.

    Returns the new run id. The replayed attempt is one more try; if it fails it is DEAD again
    (its retries were spent) and can be replayed again. Raises ``NotFound``/``Conflict``.
    """
    dead, new_id, attempt = replay_dead_run(engine, run_id)
    job = get_job(engine, dead.job_id)
    message = build_message(
        settings,
        job,
        run_id=new_id,
        attempt=attempt,
        scheduled_for=dead.scheduled_for,
        arguments=dead.arguments,
        trigger=RunTrigger.REPLAY.value,
    )
    _remove_from_dlq(settings, {run_id})
    try:
        publish(broker, [message])
        mark_enqueued(engine, [new_id])
    except Exception:
        logger.exception(
            "Publishing replay run %s failed; its PENDING row stays for the outbox sweep.", new_id
        )
    return new_id


def purge(
    settings: Settings, engine: Engine, broker: dramatiq.Broker, run_ids: list[int] | None = None
) -> int:
    """Discard dead runs (all when ``run_ids`` is None): DEAD → DISCARDED, and drop their DLQ messages.

    Returns the number of runs discarded.
    """
    ids = discard_dead_runs(engine, run_ids)
    _remove_from_dlq(settings, None if run_ids is None else set(ids))
    return len(ids)


def _remove_from_dlq(settings: Settings, run_ids: set[int] | None) -> int:
    """Drop the DLQ messages of ``run_ids`` (all messages when None); others are given back."""
    if settings.embedded_broker:
        return 0
    import pika

    removed = 0
    try:
        conn = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    except Exception:
        logger.exception("Cannot reach RabbitMQ to clean the dead-letter queue.")
        return 0
    try:
        channel = conn.channel()
        channel.queue_declare(queue=dlq_name(settings), durable=True)
        if run_ids is None:
            result = channel.queue_purge(dlq_name(settings))
            return int(result.method.message_count or 0)
        for _ in range(DEFAULT_DLQ_SCAN_LIMIT):
            method, _props, body = channel.basic_get(dlq_name(settings), auto_ack=False)
            if method is None:
                break
            try:
                run_id = json.loads(body).get("run_id")
            except ValueError:
                run_id = None
            if run_id in run_ids:
                channel.basic_ack(method.delivery_tag)
                removed += 1
        # Unacked messages go back to the queue when the channel closes.
        channel.close()
    finally:
        if conn.is_open:
            conn.close()
    return removed


def dlq_messages(settings: Settings, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Peek at the DLQ's JSON messages (they stay in the queue)."""
    if settings.embedded_broker:
        return []
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = conn.channel()
        channel.queue_declare(queue=dlq_name(settings), durable=True)
        out: list[dict[str, Any]] = []
        for _ in range(limit):
            method, _props, body = channel.basic_get(dlq_name(settings), auto_ack=False)
            if method is None:
                break
            out.append(json.loads(body))
        channel.close()
        return out
    finally:
        if conn.is_open:
            conn.close()
