"""The dead-letter queue's administration: list dead runs, replay them, purge them, peek at the queue.

A dead run is ``job_runs.status = 'DEAD'`` (the source of truth); on RabbitMQ the durable queue
``dlq_name(settings)`` also holds a JSON copy of each (:func:`tickwork.lifecycle.publish_dead_letter`
puts it there). Replay and purge change the rows first and then drop the copies; the copies
are read and removed over a short-lived pika connection of their own.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import dramatiq
from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.lifecycle import publish_committed
from tickwork.messaging import build_message, dlq_name
from tickwork.store.attempts import discard_dead_runs, list_dead_runs, replay_dead_run
from tickwork.store.jobs import get_job
from tickwork.store.models import JobRun
from tickwork.vocabulary import RunTrigger

logger = logging.getLogger(__name__)

#: How many DLQ messages one purge or replay looks at, at most.
DEFAULT_DLQ_SCAN_LIMIT = 100_000


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
    publish_committed(engine, broker, [new_id], [message], extra={"job_id": job.id})
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
