"""What the API and the CLI both do to jobs and runs beyond plain queries: run now, replay, purge.

Each writes the PENDING row first (the outbox) and publishes after commit; a failed publish
leaves the row PENDING for the scheduler's outbox sweep instead of failing the request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit

import dramatiq
from sqlalchemy import Engine

from tickwork import dlq
from tickwork.config import Settings
from tickwork.errors import Conflict, ValidationError
from tickwork.lifecycle import fire_now, publish_committed
from tickwork.messaging import build_message, queue_name
from tickwork.spec import JobSpec, check_denied_host
from tickwork.store import trigger_keys
from tickwork.store.attempts import replay_dead_run
from tickwork.store.handlers import is_registered_handler
from tickwork.store.jobs import get_job
from tickwork.store.models import Job, JobRun
from tickwork.store.runs import get_run
from tickwork.vocabulary import HandlerType, RunTrigger, utcnow

log = logging.getLogger(__name__)

#: An ``Idempotency-Key``: printable ASCII without spaces (a UUID, a request id).
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,200}")


def check_spec(settings: Settings, engine: Engine, spec: JobSpec) -> None:
    """Checks that need settings or the database: denied networks, registered Python handlers."""
    if spec.notify_url:
        check_denied_host(urlsplit(spec.notify_url).hostname or "", settings.http_deny_networks, "notifyUrl")
    if spec.handler_type == HandlerType.HTTP:
        check_denied_host(urlsplit(spec.handler_data).hostname or "", settings.http_deny_networks)
    elif not is_registered_handler(engine, spec.handler_data):
        raise ValidationError(
            "handlerData", f"no @job function named {spec.handler_data!r} is registered by any worker"
        )


def _declare(settings: Settings, broker: dramatiq.Broker, job: Job) -> None:
    queue = queue_name(settings, job.queue)
    if queue not in broker.get_declared_queues():
        broker.declare_queue(queue)


def trigger(
    settings: Settings,
    engine: Engine,
    broker: dramatiq.Broker,
    job: Job,
    *,
    arguments: dict[str, Any] | None = None,
) -> int:
    """Run ``job`` now; returns the run id (PENDING until a worker claims it).

    The broker being down does not fail the request: the row is the outbox.
    """
    try:
        _declare(settings, broker, job)
    except Exception:
        log.warning("declaring the queue failed; publishing anyway", extra={"job_id": job.id}, exc_info=True)
    return fire_now(settings, engine, broker, job, trigger=RunTrigger.MANUAL, arguments=arguments)


def check_idempotency_key(key: str, field: str = "Idempotency-Key") -> str:
    if not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise ValidationError(field, "must be 1-200 printable ASCII characters without spaces")
    return key


def request_fingerprint(arguments: dict[str, Any] | None) -> str:
    """What identifies a trigger's request for its ``Idempotency-Key``: its call arguments."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def trigger_once(
    settings: Settings,
    engine: Engine,
    broker: dramatiq.Broker | None,
    job: Job,
    *,
    key: str,
    arguments: dict[str, Any] | None = None,
) -> tuple[int, bool]:
    """Run ``job`` now unless ``key`` already made a run of it within 24 hours.

    Returns the run id and whether this call made it. The key and the new PENDING run are
    written in one transaction, so two requests racing with one key make one run: the second
    one's insert of the key fails (``UNIQUE(job_id, key)``), its run is rolled back with it, and
    it answers the first one's run. A repeat whose arguments differ from the first request's is
    refused (:class:`ValidationError`, field ``body``). ``broker`` None leaves the run PENDING
    for the outbox sweep (the embedded mode's CLI).
    """
    check_idempotency_key(key)
    fingerprint = request_fingerprint(arguments)
    for _ in range(3):
        keyed = trigger_keys.run_once(
            engine, job_id=job.id, key=key, request_hash=fingerprint, arguments=arguments, now=utcnow()
        )
        if keyed is None:
            continue  # another request recorded this key first: answer with its run
        if not keyed.created:
            if keyed.request_hash != fingerprint:
                raise ValidationError(
                    "body",
                    "differs from the first request with this Idempotency-Key "
                    f"(run {keyed.run_id}); use a new key for a different request",
                )
            return keyed.run_id, False
        if broker is not None:
            publish_run(settings, engine, broker, keyed.run_id)
        return keyed.run_id, True
    raise Conflict(f"Idempotency-Key {key!r} of job {job.id} is being recorded concurrently; try again")


def publish_run(settings: Settings, engine: Engine, broker: dramatiq.Broker, run_id: int) -> None:
    """Publish an existing PENDING run; a failure is logged and left to the outbox sweep."""
    run = get_run(engine, run_id)
    job = get_job(engine, run.job_id)
    message = build_message(
        settings,
        job,
        run_id=run.id,
        attempt=run.attempt,
        scheduled_for=run.scheduled_for,
        arguments=run.arguments,
        trigger=run.trigger,
    )
    # A retry waiting out its backoff keeps its place: publish it delayed, not early.
    delay_ms = int((run.available_at - utcnow()).total_seconds() * 1000) if run.available_at else 0
    try:
        _declare(settings, broker, job)
    except Exception:
        log.warning(
            "publish failed; the run stays PENDING for the outbox sweep",
            extra={"job_id": job.id, "run_id": run_id},
            exc_info=True,
        )
        return
    publish_committed(
        engine,
        broker,
        [run_id],
        [message],
        delay_ms=delay_ms if delay_ms > 0 else None,
        extra={"job_id": job.id},
    )


def replay(settings: Settings, engine: Engine, broker: dramatiq.Broker, run_id: int) -> int:
    """Replay a dead run as a new attempt (and drop its RabbitMQ dead letter); the new run's id."""
    return dlq.replay(settings, engine, broker, run_id)


def replay_later(engine: Engine, run_id: int) -> int:
    """Replay without publishing: the PENDING row waits for the outbox sweep (another process's broker)."""
    return replay_dead_run(engine, run_id)[1]


def purge(
    settings: Settings, engine: Engine, broker: dramatiq.Broker, run_ids: list[int] | None = None
) -> int:
    """Discard dead runs (all, or those listed) and their RabbitMQ dead letters; returns how many."""
    return dlq.purge(settings, engine, broker, run_ids)


def list_dead(
    engine: Engine, *, job_id: int | None = None, limit: int = 50, before_id: int | None = None
) -> list[JobRun]:
    """Dead runs with their reason, newest first."""
    return dlq.list_dead(engine, job_id=job_id, limit=limit, before_id=before_id)
