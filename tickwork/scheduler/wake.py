"""Wake-ups: tell running schedulers that a job was created or changed (the API and the CLI),
and listen for it (each scheduler node)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from tickwork.config import Settings
from tickwork.keys import scheduler_wake_channel

logger = logging.getLogger(__name__)


def wake_schedulers(settings: Settings, reason: str = "changed") -> bool:
    """Publish on the Redis wake channel; True if sent. Without Redis there is nobody to tell
    (an embedded scheduler is woken with ``SchedulerService.wake()`` or finds the change within
    its 2 s idle poll). A Redis error is logged, never raised: the poll still finds the change."""
    if not settings.redis_url:
        return False
    import redis

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.publish(scheduler_wake_channel(settings.namespace), reason)
        finally:
            client.close()
    except (redis.RedisError, OSError):
        logger.warning("could not wake the schedulers; they will see the change within 2 s")
        return False
    return True


class WakeListener:
    """Listens on the Redis wake channel from a thread and calls ``on_wake`` for each message.

    A lost subscription is made again after a second; the idle poll covers the gap.

    Parameters:
      redis: the Redis client.
      namespace: names the channel.
      on_wake: called (on the listener's thread) for every wake-up.
      node_id: for the log lines.
    """

    def __init__(self, redis: Any, *, namespace: str, on_wake: Callable[[], None], node_id: str = "") -> None:
        self.redis = redis
        self.channel = scheduler_wake_channel(namespace)
        self.on_wake = on_wake
        self.node_id = node_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen, name="tickwork-wake", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _listen(self) -> None:
        from redis.exceptions import RedisError

        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self.on_wake()
            except (RedisError, OSError):
                logger.warning("wake channel lost; resubscribing", extra={"node_id": self.node_id})
                self._stop.wait(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except (RedisError, OSError):
                        logger.debug("pubsub close failed")
