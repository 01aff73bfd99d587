"""Leader election: a lease on Redis (``SET key value NX PX ttl``), or in-process without Redis.

The lease keeps one ticker active so the others don't waste work; it is not what makes a fire
happen once (the database compare-and-set and unique key do). Its rules:

* the value is ``"<node_id> <random token>"``: renewal and release are compare-and-set Lua
  scripts, so a node never extends or deletes a lease it lost;
* the holder believes it leads only until ``start of its last successful acquire/renew + ttl``
  minus a clock-drift margin, measured on its own monotonic clock (:meth:`LeaderLease.is_held`
  is checked before every act, without a round trip);
* standbys call :meth:`LeaderLease.try_acquire` every renewal interval; a standby that finds the
  lease due to expire before its next call (``PTTL`` at most ``wait_ms``) sleeps until the
  expiry and takes it then, so a SIGKILLed leader is replaced when its lease expires (at most
  ``ttl`` after its last renewal), not up to a renewal interval later.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Fraction of the TTL a holder gives up early, for clock drift between it and Redis.
DRIFT_FACTOR = 0.01
DRIFT_MIN_MS = 2

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease(Protocol):
    """What the scheduler needs of a lease."""

    node_id: str

    def try_acquire(self) -> bool: ...
    def is_held(self) -> bool: ...
    def release(self) -> bool: ...


class LeaderLease:
    """A Redis lease held by one node at a time.

    Parameters:
      client: a ``redis.Redis`` client.
      key: the lease key (:func:`tickwork.keys.leader_key`).
      node_id: this node's id (first word of the value).
      ttl_ms: lease lifetime; a dead holder is replaced at most this long after its last renewal.
      wait_ms: a standby whose take fails waits for the lease's expiry if it is at most this far
        off, and takes it then (0: never waits; the scheduler passes most of its renew interval).
    """

    def __init__(self, client: Any, key: str, *, node_id: str, ttl_ms: int, wait_ms: int = 0) -> None:
        self.client = client
        self.key = key
        self.node_id = node_id
        self.ttl_ms = ttl_ms
        self.wait_ms = wait_ms
        self.value = f"{node_id} {secrets.token_hex(16)}"
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._valid_until = 0.0  # monotonic seconds
        self._lock = threading.Lock()

    def _validity(self, started: float) -> float:
        margin_ms = self.ttl_ms * DRIFT_FACTOR + DRIFT_MIN_MS
        return started + (self.ttl_ms - margin_ms) / 1000.0

    def try_acquire(self) -> bool:
        """Take the lease if it is free, or renew it if this node holds it. True when held.

        A standby that finds the lease expiring within ``wait_ms`` sleeps until then (without
        holding the lock: a release is not held up) and tries once more.
        """
        if self._try_acquire():
            return True
        if self.wait_ms <= 0 or self._valid_until > 0:
            return False
        try:
            left_ms = int(self.client.pttl(self.key))
        except Exception:
            logger.exception("leader lease: Redis error", extra={"node_id": self.node_id})
            return False
        if left_ms > self.wait_ms:
            return False
        if left_ms > 0:
            time.sleep((left_ms + 1) / 1000.0)
        # -2: gone already (released, or expired since the SET); -1 (no TTL) is not our lease
        # to take over: leave it, as before.
        return left_ms != -1 and self._try_acquire()

    def _try_acquire(self) -> bool:
        with self._lock:
            started = time.monotonic()
            try:
                if self._valid_until > 0:
                    ok = bool(self._renew(keys=[self.key], args=[self.value, self.ttl_ms]))
                    if not ok:
                        logger.warning("leader lease lost", extra={"node_id": self.node_id})
                else:
                    ok = bool(self.client.set(self.key, self.value, nx=True, px=self.ttl_ms))
                    if ok:
                        logger.info("leader lease acquired", extra={"node_id": self.node_id})
            except Exception:
                logger.exception("leader lease: Redis error", extra={"node_id": self.node_id})
                ok = False
                # Keep the local deadline: we may still hold it until then, and no longer.
                return self.is_held()
            self._valid_until = self._validity(started) if ok else 0.0
            return ok

    def is_held(self) -> bool:
        """True while this node's lease is certainly valid (local deadline, no round trip)."""
        return time.monotonic() < self._valid_until

    def holder(self) -> str | None:
        """The node id currently holding the lease on Redis, if any."""
        raw = self.client.get(self.key)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return text.split(" ", 1)[0]

    def release(self) -> bool:
        """Give the lease up if this node holds it (compare-and-set); True if it was deleted."""
        with self._lock:
            self._valid_until = 0.0
            try:
                deleted = bool(self._release(keys=[self.key], args=[self.value]))
            except Exception:
                logger.exception("leader lease: release failed", extra={"node_id": self.node_id})
                return False
            if deleted:
                logger.info("leader lease released", extra={"node_id": self.node_id})
            return deleted


class LocalLease:
    """The in-process lease used without Redis (embedded mode): same rules, one process."""

    _registry: dict[str, tuple[str, float]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, key: str, *, node_id: str, ttl_ms: int) -> None:
        self.key = key
        self.node_id = node_id
        self.ttl_ms = ttl_ms
        self.value = f"{node_id} {secrets.token_hex(16)}"
        self._valid_until = 0.0

    @classmethod
    def holder(cls, key: str) -> tuple[str, float] | None:
        """The node holding ``key`` and the seconds its lease has left, or None."""
        now = time.monotonic()
        with cls._registry_lock:
            held = cls._registry.get(key)
        if held is None or held[1] <= now:
            return None
        return held[0].split(" ", 1)[0], held[1] - now

    def try_acquire(self) -> bool:
        now = time.monotonic()
        with self._registry_lock:
            holder = self._registry.get(self.key)
            if holder is None or holder[0] == self.value or holder[1] <= now:
                expires = now + self.ttl_ms / 1000.0
                self._registry[self.key] = (self.value, expires)
                self._valid_until = expires
                return True
        self._valid_until = 0.0
        return False

    def is_held(self) -> bool:
        return time.monotonic() < self._valid_until

    def release(self) -> bool:
        self._valid_until = 0.0
        with self._registry_lock:
            holder = self._registry.get(self.key)
            if holder is not None and holder[0] == self.value:
                del self._registry[self.key]
                return True
        return False
