"""Heartbeat: each worker process beats its heartbeat (:mod:`tickwork.heartbeats`) from a thread.

The reaper that fails the attempts of workers whose heartbeat expired is the scheduler's
(:mod:`tickwork.scheduler.reaper`); its names are re-exported here for old imports.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from tickwork.heartbeats import HeartbeatStore, current_worker_id
from tickwork.middleware.attempt import in_flight_runs
from tickwork.vocabulary import utcnow

__all__ = ["Heartbeat", "HeartbeatStore", "current_worker_id"]


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


def __getattr__(name: str) -> Any:
    # The reaper moved to the scheduler (above this module): imported on first use only.
    if name in ("ABANDONED", "WORKER_LOST", "DEFAULT_ABANDON_GRACE_SECONDS", "reap_lost_attempts"):
        from tickwork.scheduler import reaper

        return getattr(reaper, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
