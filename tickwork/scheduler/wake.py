"""Tell running schedulers that a job was created or changed (the API and CLI call this)."""

from __future__ import annotations

import logging

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
