"""Dramatiq middleware of the tickwork worker: RunLog, Backoff, DeadLetter, Heartbeat, TimeLimit."""

from typing import Any

from tickwork.middleware.backoff import Backoff, backoff_delay
from tickwork.middleware.dead_letter import DeadLetter, list_dead, purge, replay
from tickwork.middleware.heartbeat import Heartbeat, HeartbeatStore, current_worker_id
from tickwork.middleware.run_log import RunLog
from tickwork.middleware.time_limit import TimeLimit

__all__ = [
    "Backoff",
    "DeadLetter",
    "Heartbeat",
    "HeartbeatStore",
    "RunLog",
    "TimeLimit",
    "backoff_delay",
    "current_worker_id",
    "list_dead",
    "purge",
    "reap_lost_attempts",
    "replay",
]


def __getattr__(name: str) -> Any:
    # The reaper moved to tickwork.scheduler.reaper (above the middleware): imported on first use.
    if name == "reap_lost_attempts":
        from tickwork.scheduler.reaper import reap_lost_attempts

        return reap_lost_attempts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
