"""The message of one attempt, and the broker that carries it.

A run message is an ordinary Dramatiq message addressed to the job's actor (``tickwork_http``
for HTTP jobs, the ``@job`` function's name for Python jobs). Its ``options["tickwork"]`` carries
what the worker middleware needs (run id, attempt, retry policy, timeout), so that claiming and
finishing an attempt cost one write each and no read.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, NotRequired, TypedDict

import dramatiq
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine

from tickwork import amqp
from tickwork.amqp import PreparedBatch
from tickwork.config import Settings
from tickwork.store.models import Job
from tickwork.store.runs import insert_run, mark_enqueued
from tickwork.vocabulary import HandlerType, RunTrigger, utcnow

logger = logging.getLogger(__name__)

HTTP_ACTOR = "tickwork_http"
OPTION = "tickwork"


class RunOptions(TypedDict):
    """What ``message.options["tickwork"]`` holds."""

    run_id: int
    job_id: int
    job_name: str
    attempt: int
    scheduled_for: str  # ISO 8601, UTC
    retry_count: int
    retry_backoff_seconds: int
    max_backoff_seconds: int
    timeout_seconds: float | None
    #: Why the attempt exists (a ``RunTrigger`` value); absent in messages of older versions.
    trigger: NotRequired[str]


def queue_name(settings: Settings, queue: str) -> str:
    """The broker queue of a job queue: namespaced, so test runs never share a live queue."""
    return f"{settings.namespace}.{queue}"


def dlq_name(settings: Settings) -> str:
    return f"{settings.namespace}.dead-letter"


def make_broker(settings: Settings, *, middleware: list[Any] | None = None) -> dramatiq.Broker:
    """RabbitMQ for ``amqp://`` URLs, Dramatiq's in-process broker otherwise."""
    if settings.embedded_broker:
        return StubBroker(middleware=middleware)
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    return RabbitmqBroker(url=settings.broker_url, middleware=middleware, confirm_delivery=False)


def run_options(job: Job, *, run_id: int, attempt: int, scheduled_for: datetime) -> RunOptions:
    return RunOptions(
        run_id=run_id,
        job_id=job.id,
        job_name=job.name,
        attempt=attempt,
        scheduled_for=scheduled_for.isoformat(),
        retry_count=job.retry_count,
        retry_backoff_seconds=job.retry_backoff_seconds,
        max_backoff_seconds=job.max_backoff_seconds,
        timeout_seconds=job.timeout_seconds,
    )


def build_message(
    settings: Settings,
    job: Job,
    *,
    run_id: int,
    attempt: int,
    scheduled_for: datetime,
    arguments: dict[str, Any] | None = None,
    trigger: str = RunTrigger.SCHEDULE.value,
) -> dramatiq.Message[Any]:
    """The Dramatiq message for one attempt of ``job`` (no actor import needed to build it)."""
    tickwork_options = run_options(job, run_id=run_id, attempt=attempt, scheduled_for=scheduled_for)
    tickwork_options["trigger"] = str(trigger)
    options: dict[str, Any] = {
        OPTION: tickwork_options,
        "max_retries": 0,  # tickwork's Backoff owns retries
    }
    if job.timeout_seconds:
        options["time_limit"] = int(job.timeout_seconds * 1000)
    if job.handler_type == HandlerType.HTTP:
        actor_name = HTTP_ACTOR
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {"url": job.handler_data, **(job.parameters or {})}
    else:
        actor_name = job.handler_data
        call = arguments if arguments is not None else {"kwargs": job.parameters or {}}
        args = tuple(call.get("args", ()))
        kwargs = dict(call.get("kwargs", {}))
    return dramatiq.Message(
        queue_name=queue_name(settings, job.queue),
        actor_name=actor_name,
        args=args,
        kwargs=kwargs,
        options=options,
    )


def prepare_publish(
    broker: dramatiq.Broker, messages: list[dramatiq.Message[Any]], *, delay_ms: int | None = None
) -> PreparedBatch:
    """Do a batch's per-message publishing work now, so :func:`publish_batch` only sends it.

    On RabbitMQ the messages are encoded and marshalled into AMQP frames (:mod:`tickwork.amqp`);
    the in-memory broker has nothing to prepare.
    """
    if type(broker).__name__ == "RabbitmqBroker" and messages:
        return amqp.prepare(broker, messages, delay_ms=delay_ms)
    return PreparedBatch(messages=messages, delay_ms=delay_ms)


def publish_batch(broker: dramatiq.Broker, batch: PreparedBatch) -> None:
    """Publish a prepared batch durably; a failure raises, and the PENDING rows remain for the
    outbox sweep.

    On RabbitMQ the batch is one transaction on this thread's transactional channel: when this
    returns, RabbitMQ has taken every message of it. The in-memory broker enqueues one by one.
    """
    if type(broker).__name__ == "RabbitmqBroker":
        amqp.publish_prepared(broker, batch)
        return
    declared = broker.get_declared_queues()
    for message in batch.messages:
        if message.queue_name not in declared:  # the stub broker refuses unknown queues
            broker.declare_queue(message.queue_name)
            declared = broker.get_declared_queues()
        broker.enqueue(message, delay=batch.delay_ms)


def publish(
    broker: dramatiq.Broker, messages: list[dramatiq.Message[Any]], *, delay_ms: int | None = None
) -> None:
    """Prepare and publish one durable batch (see :func:`publish_batch`)."""
    if messages:
        publish_batch(broker, prepare_publish(broker, messages, delay_ms=delay_ms))


def ready_messages(broker: dramatiq.Broker, queue: str) -> int | None:
    """Messages waiting in ``queue`` (not counting those a consumer holds); None if unknown."""
    try:
        if type(broker).__name__ == "RabbitmqBroker":
            rabbit: Any = broker
            rabbit.declare_queue(queue, ensure=True)
            if rabbit.connection.is_closed:
                del rabbit.connection  # RabbitMQ went away since: reconnect
            return int(rabbit.channel.queue_declare(queue=queue, passive=True).method.message_count)
        queues = getattr(broker, "queues", {})
        return int(queues[queue].qsize()) if queue in queues else 0
    except Exception:
        logger.warning("Could not read the depth of queue %s.", queue, exc_info=True)
        if type(broker).__name__ == "RabbitmqBroker":
            # Dramatiq keeps a thread's dead connection and channel: drop them, so that the next
            # call reconnects instead of failing forever (the outbox would then wait its backlog
            # limit before republishing a lost attempt).
            try:
                del rabbit.connection
            except Exception:
                logger.debug("Dropping the broker connection failed.", exc_info=True)
        return None


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

    Returns the run id once the row is committed. A failed publish is logged, not raised: the
    row stays PENDING and the outbox sweep publishes it (raising would invite the caller to try
    again, and the run would then happen twice). Without a broker (``None``: the embedded mode
    outside `tickwork dev`) the row is left unpublished for the sweep of the process that owns
    the in-process broker, which publishes never-published rows within seconds.
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
    try:
        publish(broker, [message])
    except Exception:
        logger.warning(
            "Publishing run %s of job %s failed; it stays PENDING for the outbox sweep.",
            run_id,
            job.name,
            exc_info=True,
        )
        return run_id
    mark_enqueued(engine, [run_id])
    return run_id
