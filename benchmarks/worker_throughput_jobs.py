"""Actors of the worker benchmark: tickwork @job no-ops and bare Dramatiq no-ops on the same broker.

Imported by ``python -m dramatiq tickwork.worker benchmarks.worker_throughput_jobs`` (after the
tickwork broker exists, so the bare actors bind to it).
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis

from tickwork import job
from tickwork.config import get_settings
from tickwork.middleware.attempt import current_attempt

_settings = get_settings()
_redis = redis.Redis.from_url(_settings.redis_url or "redis://127.0.0.1:6379/0")
LATENCY_KEY = f"{_settings.namespace}:bench:latency"
#: --job-output distinct: each job returns a value of its own, as real jobs do.
_DISTINCT_OUTPUT = os.environ.get("BENCH_JOB_OUTPUT") == "distinct"

if os.environ.get("BENCH_SYNC_SUCCESS") == "1":
    # --also-sync: the worker thread waits for a success's outcome commit (the old hot path).
    from tickwork.middleware.run_log import RunLog

    for _middleware in dramatiq.get_broker().middleware:
        if isinstance(_middleware, RunLog):
            _middleware.async_success = False


@job(name="bench_noop", queue="bench")
def bench_noop() -> float | None:
    return time.time() if _DISTINCT_OUTPUT else None


@job(name="bench_latency", queue="benchlat")
def bench_latency(sent_at: float, committed_at: float | None = None) -> None:
    """``sent_at``: before the row's insert; ``committed_at``: after its commit (the worker side)."""
    now = time.time()
    if committed_at is not None:
        # Joined with the run's row (its started_at) by the benchmark.
        attempt = current_attempt()
        if attempt is not None:
            _redis.rpush(
                f"{LATENCY_KEY}:tickwork:start", f"{attempt.run_id} {sent_at!r} {committed_at!r} {now!r}"
            )
    _redis.rpush(f"{LATENCY_KEY}:tickwork", now - sent_at)


@dramatiq.actor(
    actor_name="bare_noop", queue_name=f"{_settings.namespace}.bare", broker=dramatiq.get_broker()
)
def bare_noop() -> float | None:
    return time.time() if _DISTINCT_OUTPUT else None


@dramatiq.actor(
    actor_name="bare_latency", queue_name=f"{_settings.namespace}.barelat", broker=dramatiq.get_broker()
)
def bare_latency(sent_at: float) -> None:
    _redis.rpush(f"{LATENCY_KEY}:bare", time.time() - sent_at)
