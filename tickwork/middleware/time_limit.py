"""TimeLimit: Dramatiq's thread-interrupting time limit, tuned for tickwork.

Sync actors are interrupted by Dramatiq's mechanism (an exception raised asynchronously in the
worker thread: it cannot interrupt a thread blocked in a system call or C code until that call
returns). Async actors time out with ``asyncio.timeout`` on the event loop; for them this limit
is only a backstop (the limit plus a grace) for a coroutine that blocks its event loop.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.middleware.time_limit import TimeLimit as DramatiqTimeLimit

#: No limit unless the job sets one (Dramatiq's own default is 10 minutes).
DEFAULT_TIME_LIMIT_MS = float("inf")
#: How often deadlines are checked; the precision of a sync timeout.
DEFAULT_INTERVAL_MS = 100
#: Extra time before the backstop interrupts an async actor that has its own asyncio timeout.
DEFAULT_ASYNC_GRACE_MS = 2000


class TimeLimit(DramatiqTimeLimit):
    """Interrupts sync actors that run longer than ``options["time_limit"]`` milliseconds.

    Parameters:
      time_limit: the default limit in milliseconds (infinite: a job without a timeout runs on).
      interval: how often deadlines are checked, in milliseconds.
      async_grace: added to the limit of actors declared with ``asyncio_timeout=True``.
    """

    def __init__(
        self,
        *,
        time_limit: float = DEFAULT_TIME_LIMIT_MS,
        interval: int = DEFAULT_INTERVAL_MS,
        async_grace: int = DEFAULT_ASYNC_GRACE_MS,
    ) -> None:
        super().__init__(time_limit=time_limit, interval=interval)
        self.async_grace = async_grace

    @property
    def actor_options(self) -> set[str]:
        return {"time_limit", "asyncio_timeout"}

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        actor = broker.get_actor(message.actor_name)
        limit = message.options.get("time_limit") or actor.options.get("time_limit", self.time_limit)
        if actor.options.get("asyncio_timeout"):
            limit += self.async_grace
        self.manager.add_timeout(threading.get_ident(), limit)  # type: ignore[no-untyped-call]
