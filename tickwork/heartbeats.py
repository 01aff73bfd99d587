"""Worker heartbeats: each worker process says it is alive, in Redis (a key with a TTL) or in-process.

The worker's ``Heartbeat`` middleware writes them; the scheduler's reaper and the dashboard read
them. A store of its own, so that neither reader imports worker middleware.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from typing import Any

from tickwork.config import Settings
from tickwork.keys import worker_heartbeat_key, worker_heartbeat_pattern, worker_heartbeats_since_key
from tickwork.vocabulary import utcnow

_worker_id: str | None = None
_memory_beats: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}
_memory_lock = threading.Lock()


def current_worker_id() -> str:
    """``host-pid-random`` of this process (a forked child makes its own).

    Called several times per attempt on the worker's hot path: a fork hook forgets the parent's
    id, so no ``getpid`` system call is made per call."""
    global _worker_id
    worker_id = _worker_id
    if worker_id is None:
        pid = os.getpid()
        worker_id = _worker_id = f"{socket.gethostname()}-{pid}-{secrets.token_hex(3)}"
    return worker_id


def _forget_worker_id() -> None:
    global _worker_id
    _worker_id = None


os.register_at_fork(after_in_child=_forget_worker_id)


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
