"""The reaper: RUNNING attempts that no live worker runs are failed and retried (or dead-lettered).

It runs in the scheduler's ``worker-sweep`` job on the leader. What follows a lost attempt is
decided and recorded by :func:`tickwork.lifecycle.settle_failure`, under the job's policy, as for
an attempt that raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.heartbeats import HeartbeatStore
from tickwork.lifecycle import FailedAttempt, Failure, Retry, settle_failure
from tickwork.messaging import HTTP_ACTOR, build_message, queue_name
from tickwork.store.attempts import RunningAttempt, running_attempts, running_workers
from tickwork.store.jobs import get_job
from tickwork.vocabulary import HandlerType, RunTrigger

logger = logging.getLogger(__name__)

WORKER_LOST = "worker lost"
ABANDONED = "abandoned: its worker no longer runs it and could not record its outcome"
#: A live worker's RUNNING attempt must have started this long before its last beat (and be
#: missing from the beat's in-flight list) to count as abandoned.
DEFAULT_ABANDON_GRACE_SECONDS = 1.0


def reap_lost_attempts(
    settings: Settings,
    engine: Engine,
    broker: dramatiq.Broker,
    store: HeartbeatStore,
    *,
    limit: int = 1000,
    grace_seconds: float = DEFAULT_ABANDON_GRACE_SECONDS,
    keep_going: Callable[[], bool] = lambda: True,
) -> int:
    """Fail RUNNING attempts no live worker runs, and retry or dead-letter them under their policy.

    Two kinds: attempts of a worker whose heartbeat expired (``worker lost``), and attempts a
    live worker no longer lists as in flight although they started ``grace_seconds`` before its
    last beat (its outcome could not be written: ``ABANDONED``). Each one is a compare-and-set
    on the worker's id, so a reaper racing the worker (or another reaper) changes it at most
    once. ``keep_going`` is asked before each attempt (the scheduler passes "leading and not
    stopping": a shutdown does not wait for up to ``limit`` retries per worker; what is left is
    the next leader's). Returns the number of attempts reaped.
    """
    if store.redis is None and not settings.embedded_broker:
        # An in-process registry only sees this process's workers: every other worker would look dead.
        logger.error(
            "Not reaping: workers on RabbitMQ need a shared heartbeat store (set TICKWORK_REDIS_URL)."
        )
        return 0
    reaped = 0
    # After Redis lost its keys, every worker's heartbeat is missing until its next beat: only
    # believe a missing heartbeat once the heartbeats have been kept for a full TTL.
    believe_missing = store.kept_for() >= store.ttl_seconds
    for worker_id in running_workers(engine):
        if not keep_going():
            break
        beat = store.info(worker_id) if worker_id else None
        if beat is None:
            if not believe_missing:
                logger.info("Heartbeats kept for less than their TTL (Redis restarted?): not reaping yet.")
                continue
            rows = running_attempts(engine, worker_id=worker_id, any_worker=False, limit=limit)
            reason = WORKER_LOST
        elif "in_flight" in beat and "beat_at" in beat:
            before = datetime.fromisoformat(beat["beat_at"]) - timedelta(seconds=grace_seconds)
            held = set(beat["in_flight"])
            rows = [
                row
                for row in running_attempts(
                    engine, worker_id=worker_id, any_worker=False, started_before=before, limit=limit
                )
                if row.id not in held
            ]
            reason = ABANDONED
        else:
            continue  # alive, and too old to say what it runs
        for row in rows:
            if not keep_going():
                return reaped
            reaped += _fail_lost_attempt(settings, engine, broker, row, reason)
    return reaped


def _fail_lost_attempt(
    settings: Settings, engine: Engine, broker: dramatiq.Broker, row: RunningAttempt, reason: str
) -> int:
    """Fail one lost attempt with ``reason`` and retry it (or mark it DEAD); 1 if this call did it."""
    job = get_job(engine, row.job_id)
    is_http = job.handler_type == HandlerType.HTTP
    failed = FailedAttempt(
        run_id=row.id,
        worker_id=row.worker_id,
        job_id=row.job_id,
        job_name=job.name,
        attempt=row.attempt,
        scheduled_for=row.scheduled_for,
        retry_count=job.retry_count,
        retry_backoff_seconds=job.retry_backoff_seconds,
        max_backoff_seconds=job.max_backoff_seconds,
        arguments=row.arguments,
        actor_name=HTTP_ACTOR if is_http else job.handler_data,
        queue_name=queue_name(settings, job.queue),
    )

    def next_message(new_id: int, step: Retry) -> dramatiq.Message[Any]:
        return build_message(
            settings,
            job,
            run_id=new_id,
            attempt=step.next_attempt,
            scheduled_for=row.scheduled_for,
            arguments=None if is_http else row.arguments,
            trigger=RunTrigger.RETRY.value,
        )

    settled = settle_failure(
        settings, engine, broker, failed, Failure(error=reason), next_message=next_message
    )
    if not settled.recorded:
        return 0
    if isinstance(settled.step, Retry):
        logger.warning(
            "Run %s attempt %s of job %s: %s (worker %s); attempt %s (run %s) in %.2f s.",
            row.id,
            row.attempt,
            job.name,
            reason,
            row.worker_id,
            settled.step.next_attempt,
            settled.retry_run_id,
            settled.step.delay,
        )
    else:
        logger.warning(
            "Run %s of job %s: %s (worker %s), no retries left: DEAD.",
            row.id,
            job.name,
            reason,
            row.worker_id,
        )
    return 1
