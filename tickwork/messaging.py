"""The message of one attempt, and the broker that carries it.

A run message is an ordinary Dramatiq message addressed to the job's actor (``tickwork_http``
for HTTP jobs, the ``@job`` function's name for Python jobs). Its ``options["tickwork"]`` carries
what the worker middleware needs (run id, attempt, retry policy, timeout), so that claiming and
finishing an attempt cost one write each and no read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, NotRequired, Protocol, TypedDict

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, MiddlewareError

from tickwork import amqp, tracing
from tickwork.amqp import PreparedBatch
from tickwork.config import Settings
from tickwork.vocabulary import HandlerType, RunTrigger

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
    #: The job's ``maxConcurrency`` when it has one: the worker then claims through
    #: :func:`tickwork.store.concurrency.claim_within_limit`. Absent: unlimited.
    max_concurrency: NotRequired[int]


class JobFields(Protocol):
    """What a message is built from: a stored ``Job`` or the scheduler's ``JobSnapshot``."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def handler_type(self) -> str: ...
    @property
    def handler_data(self) -> str: ...
    @property
    def parameters(self) -> dict[str, Any] | None: ...
    @property
    def retry_count(self) -> int: ...
    @property
    def retry_backoff_seconds(self) -> int: ...
    @property
    def max_backoff_seconds(self) -> int: ...
    @property
    def timeout_seconds(self) -> float | None: ...
    @property
    def queue(self) -> str: ...
    @property
    def max_concurrency(self) -> int | None: ...


def queue_name(settings: Settings, queue: str) -> str:
    """The broker queue of a job queue: namespaced, so test runs never share a live queue."""
    return f"{settings.namespace}.{queue}"


def dlq_name(settings: Settings) -> str:
    return f"{settings.namespace}.dead-letter"


class OverriddenHooks:
    """Signals go only to the middleware that override their hook.

    Dramatiq's ``emit_before``/``emit_after`` call every middleware's hook for every signal, and
    a worker emits four per message (``process_message`` and ``ack``, before and after) to a
    dozen middleware that mostly inherit the no-op. The list of overriding hooks is kept per
    signal and rebuilt when middleware is added; order and error handling are Dramatiq's.
    """

    middleware: list[Middleware]
    logger: logging.Logger

    def _hooks(self, name: str) -> list[tuple[Middleware, Callable[..., Any]]]:
        table: dict[str, list[tuple[Middleware, Callable[..., Any]]]] = self.__dict__.setdefault(
            "_hook_table", {}
        )
        hooks = table.get(name)
        if hooks is None:
            base = getattr(Middleware, name, None)
            hooks = table[name] = [
                (m, getattr(m, name))
                for m in self.middleware
                if name in vars(m) or getattr(type(m), name, None) is not base
            ]
        return hooks

    def add_middleware(self, middleware: Middleware, **where: Any) -> None:
        super().add_middleware(middleware, **where)  # type: ignore[misc]
        self.__dict__["_hook_table"] = {}

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        signal = "before_" + signal
        for middleware, hook in self._hooks(signal):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        signal = "after_" + signal
        for middleware, hook in reversed(self._hooks(signal)):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware, exc_info=True)


class TickworkRabbitmqBroker(OverriddenHooks, RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, signals dispatched by :class:`OverriddenHooks`, acks sent in
    groups by :class:`tickwork.amqp.GroupedAcks`."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        consumer = super().consume(queue_name, prefetch, timeout)
        return amqp.GroupedAcks(consumer) if amqp.GroupedAcks.wraps(consumer) else consumer


class TickworkStubBroker(OverriddenHooks, StubBroker):
    """Dramatiq's in-process broker, signals dispatched by :class:`OverriddenHooks`."""


def make_broker(settings: Settings, *, middleware: list[Any] | None = None) -> dramatiq.Broker:
    """RabbitMQ for ``amqp://`` URLs, Dramatiq's in-process broker otherwise."""
    if settings.embedded_broker:
        return TickworkStubBroker(middleware=middleware)
    return TickworkRabbitmqBroker(url=settings.broker_url, middleware=middleware, confirm_delivery=False)


def is_rabbitmq(broker: dramatiq.Broker) -> bool:
    """True for Dramatiq's RabbitMQ broker (and subclasses): the transport :mod:`tickwork.amqp` speaks."""
    return isinstance(broker, RabbitmqBroker)


def job_run_options(job: JobFields, *, run_id: int, attempt: int, scheduled_for: datetime) -> RunOptions:
    """The ``options["tickwork"]`` of an attempt of ``job`` (``middleware.attempt.options_of`` reads them)."""
    options = RunOptions(
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
    if job.max_concurrency is not None:
        options["max_concurrency"] = int(job.max_concurrency)
    return options


def build_message(
    settings: Settings,
    job: JobFields,
    *,
    run_id: int,
    attempt: int,
    scheduled_for: datetime,
    arguments: dict[str, Any] | None = None,
    trigger: str = RunTrigger.SCHEDULE.value,
) -> dramatiq.Message[Any]:
    """The Dramatiq message for one attempt of ``job`` (no actor import needed to build it)."""
    tickwork_options = job_run_options(job, run_id=run_id, attempt=attempt, scheduled_for=scheduled_for)
    tickwork_options["trigger"] = str(trigger)
    options: dict[str, Any] = {
        OPTION: tickwork_options,
        "max_retries": 0,  # tickwork's Backoff owns retries
    }
    if job.timeout_seconds:
        options["time_limit"] = int(job.timeout_seconds * 1000)
    tracing.inject(options)  # the current span (a fire, or a failed attempt for its retry)
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


def retry_message(
    message: Any, *, run_id: int, attempt: int, trigger: str = RunTrigger.RETRY.value
) -> dramatiq.Message[Any]:
    """The message of the next attempt of ``message``: same actor, queue and arguments, new run.

    Built from the failed message itself (its options hold the retry policy and the job's
    ``max_concurrency``), so a retry needs no read of the job. It carries the trace context of
    the current span (the failed attempt's): the retry's span is a child of it.
    """
    options: RunOptions = message.options[OPTION]
    next_options = RunOptions(**{**options, "run_id": run_id, "attempt": attempt, "trigger": trigger})  # type: ignore[typeddict-item]
    carried = {k: v for k, v in message.options.items() if k in ("time_limit", "max_retries")}
    message_options: dict[str, Any] = {**carried, OPTION: next_options}
    tracing.inject(message_options)
    return dramatiq.Message(
        queue_name=message.queue_name,
        actor_name=message.actor_name,
        args=tuple(message.args),
        kwargs=dict(message.kwargs),
        options=message_options,
    )


def prepare_publish(
    broker: dramatiq.Broker, messages: list[dramatiq.Message[Any]], *, delay_ms: int | None = None
) -> PreparedBatch:
    """Do a batch's per-message publishing work now, so :func:`publish_batch` only sends it.

    On RabbitMQ the messages are encoded and marshalled into AMQP frames (:mod:`tickwork.amqp`);
    the in-memory broker has nothing to prepare.
    """
    if is_rabbitmq(broker) and messages:
        return amqp.prepare(broker, messages, delay_ms=delay_ms)
    return PreparedBatch(messages=messages, delay_ms=delay_ms)


def stage_batch(broker: dramatiq.Broker, batch: PreparedBatch) -> None:
    """Send a prepared batch ahead of its commit (:func:`tickwork.amqp.stage`); the in-memory
    broker has nothing to send ahead. Raises like :func:`publish_batch`."""
    if is_rabbitmq(broker):
        amqp.stage(broker, batch)


def publish_batch(broker: dramatiq.Broker, batch: PreparedBatch) -> None:
    """Publish a prepared batch durably; a failure raises, and the PENDING rows remain for the
    outbox sweep.

    On RabbitMQ the batch is one transaction on this thread's transactional channel: when this
    returns, RabbitMQ has taken every message of it. The in-memory broker enqueues one by one.
    """
    if is_rabbitmq(broker):
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
        if is_rabbitmq(broker):
            rabbit: Any = broker
            rabbit.declare_queue(queue, ensure=True)
            if rabbit.connection.is_closed:
                del rabbit.connection  # RabbitMQ went away since: reconnect
            return int(rabbit.channel.queue_declare(queue=queue, passive=True).method.message_count)
        queues = getattr(broker, "queues", {})
        return int(queues[queue].qsize()) if queue in queues else 0
    except Exception:
        logger.warning("Could not read the depth of queue %s.", queue, exc_info=True)
        if is_rabbitmq(broker):
            # Dramatiq keeps a thread's dead connection and channel: drop them, so that the next
            # call reconnects instead of failing forever (the outbox would then wait its backlog
            # limit before republishing a lost attempt).
            try:
                del rabbit.connection
            except Exception:
                logger.debug("Dropping the broker connection failed.", exc_info=True)
        return None


def __getattr__(name: str) -> Any:
    # ``fire_now`` moved to tickwork.lifecycle (above this module): imported on first use only.
    if name == "fire_now":
        from tickwork.lifecycle import fire_now

        return fire_now
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
