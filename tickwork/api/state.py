"""What the routers share: settings, the engine, the broker, and the job-changed hook."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import dramatiq
from fastapi import Depends, Request
from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.keys import scheduler_wake_channel
from tickwork.messaging import make_broker

log = logging.getLogger(__name__)

#: Called with a job id after a job is created, changed or resumed.
JobChangedHook = Callable[[int], None]
#: The scheduler nodes running in this process (embedded mode), as ``GET /cluster`` lists them.
LocalSchedulers = Callable[[], list[dict[str, Any]]]


@dataclass
class ApiState:
    """Held on ``app.state.tickwork``; the broker is made on first use (reads never need it)."""

    settings: Settings
    engine: Engine
    broker: dramatiq.Broker | None = None
    on_job_changed: JobChangedHook | None = None
    local_schedulers: LocalSchedulers | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get_broker(self) -> dramatiq.Broker:
        with self._lock:
            if self.broker is None:
                self.broker = make_broker(self.settings)
            return self.broker

    def job_changed(self, job_id: int) -> None:
        """Tell schedulers to recompute their wake-up; a failure is logged, never raised."""
        if self.on_job_changed is None:
            return
        try:
            self.on_job_changed(job_id)
        except Exception:
            log.warning("job-changed notification failed", extra={"job_id": job_id}, exc_info=True)


def redis_wake_hook(settings: Settings) -> JobChangedHook | None:
    """Publish on the scheduler wake channel (distributed mode); None without Redis."""
    if not settings.redis_url:
        return None
    import redis

    client: Any = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    channel = scheduler_wake_channel(settings.namespace)

    def publish(job_id: int) -> None:
        client.publish(channel, str(job_id))

    return publish


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.tickwork
    return state


State = Annotated[ApiState, Depends(get_state)]
