"""EventLoop: Dramatiq's AsyncIO middleware with a daemon event-loop thread.

Dramatiq's loop thread is not a daemon, so a worker process told to die mid-shutdown (a second
SIGTERM) waits for it forever; as a daemon it ends with the process.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.asyncio import EventLoopThread, set_event_loop_thread
from dramatiq.middleware import AsyncIO

#: Seconds the loop thread gets to start.
DEFAULT_START_TIMEOUT = 1.0


class EventLoop(AsyncIO):
    """Runs async actors on one event loop per worker process (a daemon thread)."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        thread = EventLoopThread(self.logger)
        thread.daemon = True
        thread.start(timeout=DEFAULT_START_TIMEOUT)
        set_event_loop_thread(thread)
