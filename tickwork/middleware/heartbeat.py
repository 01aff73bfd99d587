"""Heartbeat: each worker process says it is alive; attempts of workers that stopped are reaped.

A worker process beats a Redis key with a TTL (``keys.worker_heartbeat_key``) from a thread, or an
in-process registry in embedded mode. ``reap_lost_attempts`` fails a RUNNING attempt whose
worker's heartbeat expired as ``worker lost`` (compare-and-set on that worker's id) and retries
it under its job's policy, or dead-letters it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.keys import worker_heartbeat_key, worker_heartbeat_pattern, worker_heartbeats_since_key
from tickwork.messaging import HTTP_ACTOR, build_message, queue_name, run_options
from tickwork.middleware.attempt import in_flight_runs
from tickwork.middleware.backoff import DEFAULT_JITTER, backoff_delay
from tickwork.middleware.dead_letter import dead_letter_payload, publish_dead_letter
from tickwork.store.alerts import finish_dead
from tickwork.store.attempts import RunningAttempt, finish_and_retry, running_attempts, running_workers
from tickwork.store.jobs import get_job
from tickwork.store.models import HandlerType, RunTrigger, utcnow
from tickwork.store.runs import mark_enqueued

logger = logging.getLogger(__name__)

WORKER_LOST = "worker lost"
ABANDONED = "abandoned: its worker no longer runs it and could not record its outcome"
#: A live worker's RUNNING attempt must have started this long before its last beat (and be
#: missing from the beat's in-flight list) to count as abandoned.
DEFAULT_ABANDON_GRACE_SECONDS = 1.0

_worker_id: tuple[int, str] | None = None
_memory_beats: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}
_memory_lock = threading.Lock()


def current_worker_id() -> str:
    """``host-pid-random`` of this process (recomputed after a fork)."""
    global _worker_id
    pid = os.getpid()
    if _worker_id is None or _worker_id[0] != pid:
        _worker_id = (pid, f"{socket.gethostname()}-{pid}-{secrets.token_hex(3)}")
    return _worker_id[1]


class HeartbeatStore:
    """Where worker heartbeats live: Redis keys with a TTL, or an in-process registry.

    Parameters:
      namespace: the key prefix (``settings.namespace``).
      ttl_seconds: a worker not heard from for this long is considered dead.
      redis_url: Redis, or None for the in-process registry (embedded mode).
    """

    def __init__(self, *, namespace: str, ttl_seconds: float, redis_url: str | None = None) -> None:
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        self.redis: Any = None
        if redis_url:
            import redis

            self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    @classmethod
    def from_settings(cls, settings: Settings) -> HeartbeatStore:
        return cls(
            namespace=settings.namespace,
            ttl_seconds=settings.heartbeat_ttl_seconds,
            redis_url=settings.redis_url,
        )

    def beat(self, worker_id: str, info: dict[str, Any] | None = None) -> None:
        value = {"worker_id": worker_id, "beat_at": utcnow().isoformat(), **(info or {})}
        if self.redis is not None:
            self.redis.set(
                worker_heartbeat_key(self.namespace, worker_id),
                json.dumps(value),
                px=int(self.ttl_seconds * 1000),
            )
            return
        with _memory_lock:
            _memory_beats.setdefault(self.namespace, {})[worker_id] = (
                time.monotonic() + self.ttl_seconds,
                value,
            )

    def forget(self, worker_id: str) -> None:
        if self.redis is not None:
            self.redis.delete(worker_heartbeat_key(self.namespace, worker_id))
            return
        with _memory_lock:
            _memory_beats.get(self.namespace, {}).pop(worker_id, None)

    def info(self, worker_id: str) -> dict[str, Any] | None:
        """The worker's last heartbeat (``beat_at``, ``in_flight``, ...), or None if it expired."""
        if self.redis is not None:
            raw = self.redis.get(worker_heartbeat_key(self.namespace, worker_id))
            return None if raw is None else dict(json.loads(raw))
        with _memory_lock:
            entry = _memory_beats.get(self.namespace, {}).get(worker_id)
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def is_alive(self, worker_id: str) -> bool:
        if self.redis is not None:
            return bool(self.redis.exists(worker_heartbeat_key(self.namespace, worker_id)))
        with _memory_lock:
            entry = _memory_beats.get(self.namespace, {}).get(worker_id)
        return entry is not None and entry[0] > time.monotonic()

    def kept_for(self) -> float:
        """Seconds the heartbeats have been kept: a heartbeat missing for less than its TTL since
        then may simply not have been written again yet (Redis restarted empty, or was flushed).

        The first call after such a loss starts the clock (``SET NX`` of a marker holding the Redis
        server time). The in-process registry lives as long as the process: always ``inf``.
        """
        if self.redis is None:
            return float("inf")
        seconds, micros = self.redis.time()
        now = seconds + micros / 1e6
        key = worker_heartbeats_since_key(self.namespace)
        self.redis.set(key, repr(now), nx=True)
        since = self.redis.get(key)
        return now - float(since) if since is not None else 0.0

    def alive_workers(self) -> list[dict[str, Any]]:
        """The heartbeat values of live workers (``worker_id``, ``host``, ``pid``, ``beat_at``, ...)."""
        if self.redis is not None:
            keys = list(self.redis.scan_iter(worker_heartbeat_pattern(self.namespace), count=1000))
            values = self.redis.mget(keys) if keys else []
            return [json.loads(v) for v in values if v]
        now = time.monotonic()
        with _memory_lock:
            return [v for deadline, v in _memory_beats.get(self.namespace, {}).values() if deadline > now]

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()


class Heartbeat(Middleware):
    """Beats this worker process's heartbeat from a thread while the worker runs.

    The first beat is written before the worker consumes anything; the key is removed after a
    graceful shutdown (in-flight attempts have finished by then).

    Parameters:
      store: the heartbeat store.
      interval_seconds: time between beats (well below the store's TTL).
    """

    def __init__(self, *, store: HeartbeatStore, interval_seconds: float) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.store = store
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = utcnow().isoformat()

    def _info(self) -> dict[str, Any]:
        # beat_at is taken before the in-flight list: a run claimed before beat_at is listed
        # unless this process is done with it (RunLog adds a run before its claim's start time).
        beat_at = utcnow().isoformat()
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self._started_at,
            "beat_at": beat_at,
            "in_flight": in_flight_runs(),
        }

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._started_at = utcnow().isoformat()
        self.store.beat(current_worker_id(), self._info())

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tickwork-heartbeat", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.forget(current_worker_id())
        except Exception:
            self.logger.warning("Removing the heartbeat failed; it expires by itself.", exc_info=True)

    def _run(self) -> None:
        worker_id = current_worker_id()
        while not self._stop.wait(self.interval_seconds):
            try:
                self.store.beat(worker_id, self._info())
            except Exception:
                self.logger.warning("Heartbeat of %s failed.", worker_id, exc_info=True)


def reap_lost_attempts(
    settings: Settings,
    engine: Engine,
    broker: dramatiq.Broker,
    store: HeartbeatStore,
    *,
    limit: int = 1000,
    grace_seconds: float = DEFAULT_ABANDON_GRACE_SECONDS,
) -> int:
    """Fail RUNNING attempts no live worker runs, and retry or dead-letter them under their policy.

    Two kinds: attempts of a worker whose heartbeat expired (``worker lost``), and attempts a
    live worker no longer lists as in flight although they started ``grace_seconds`` before its
    last beat (its outcome could not be written: ``ABANDONED``). Each one is a compare-and-set
    on the worker's id, so a reaper racing the worker (or another reaper) changes it at most
    once. Returns the number of attempts reaped.
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
            reaped += _fail_lost_attempt(settings, engine, broker, row, reason)
    return reaped


def _fail_lost_attempt(
    settings: Settings, engine: Engine, broker: dramatiq.Broker, row: RunningAttempt, reason: str
) -> int:
    """Fail one lost attempt with ``reason`` and retry it (or mark it DEAD); 1 if this call did it."""
    worker_id = row.worker_id
    job = get_job(engine, row.job_id)
    if row.attempt <= job.retry_count:
        delay = backoff_delay(
            row.attempt, job.retry_backoff_seconds, job.max_backoff_seconds, jitter=DEFAULT_JITTER
        )
        new_id = finish_and_retry(
            engine,
            row.id,
            worker_id,
            job_id=row.job_id,
            scheduled_for=row.scheduled_for,
            next_attempt=row.attempt + 1,
            available_at=utcnow() + timedelta(seconds=delay),
            arguments=row.arguments,
            output=None,
            error=reason,
            traceback=None,
        )
        if new_id is None:
            return 0
        logger.warning(
            "Run %s attempt %s of job %s: %s (worker %s); attempt %s (run %s) in %.2f s.",
            row.id,
            row.attempt,
            job.name,
            reason,
            worker_id,
            row.attempt + 1,
            new_id,
            delay,
        )
        arguments = None if job.handler_type == HandlerType.HTTP else row.arguments
        message = build_message(
            settings,
            job,
            run_id=new_id,
            attempt=row.attempt + 1,
            scheduled_for=row.scheduled_for,
            arguments=arguments,
            trigger=RunTrigger.RETRY.value,
        )
        try:
            broker.enqueue(message, delay=int(delay * 1000))
            mark_enqueued(engine, [new_id])
        except Exception:
            logger.exception("Publishing retry run %s failed; it stays PENDING for the outbox.", new_id)
        return 1
    # Issue 13 hook: DEAD, run.dead and the auto-pause in one transaction.
    if not finish_dead(engine, row.id, worker_id, notify_url=settings.notify_url, error=reason):
        return 0
    logger.warning(
        "Run %s of job %s: %s (worker %s), no retries left: DEAD.", row.id, job.name, reason, worker_id
    )
    options = run_options(job, run_id=row.id, attempt=row.attempt, scheduled_for=row.scheduled_for)
    publish_dead_letter(
        settings,
        broker,
        dead_letter_payload(
            options,
            error=reason,
            actor_name=job.handler_data if job.handler_type == HandlerType.PYTHON else HTTP_ACTOR,
            queue_name=queue_name(settings, job.queue),
        ),
    )
    return 1
