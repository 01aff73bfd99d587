"""The bare Dramatiq anchor of the worker benchmark: Dramatiq's own RabbitMQ broker with its
default middleware, no tickwork code at all, on the same RabbitMQ and the same queue names.

    python -m dramatiq benchmarks.bare_dramatiq_jobs --processes 2 --threads 8 --queues <ns>.bare

The benchmark sends the messages (``bare_noop``, ``bare_latency``) from its own process through
``benchmarks.worker_throughput_jobs``; only the actor names and queues need to match.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker

_namespace = os.environ["TICKWORK_NAMESPACE"]
_redis = redis.Redis.from_url(os.environ.get("TICKWORK_REDIS_URL") or "redis://127.0.0.1:6379/0")
LATENCY_KEY = f"{_namespace}:bench:latency"

broker = RabbitmqBroker(url=os.environ["TICKWORK_BROKER_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bare_noop", queue_name=f"{_namespace}.bare")
def bare_noop() -> float | None:
    # --job-output distinct: a value of its own, as tickwork's job returns (Dramatiq drops it).
    return time.time() if os.environ.get("BENCH_JOB_OUTPUT") == "distinct" else None


@dramatiq.actor(actor_name="bare_latency", queue_name=f"{_namespace}.barelat")
def bare_latency(sent_at: float) -> None:
    _redis.rpush(f"{LATENCY_KEY}:bare", time.time() - sent_at)
