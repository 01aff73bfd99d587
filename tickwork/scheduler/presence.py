"""This scheduler node's presence key in Redis: who runs, where, since when, and whether it leads.

The dashboard lists scheduler nodes from these keys. They expire by themselves (a node that
died disappears after its TTL); a node that stops removes its own.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError

from tickwork.keys import scheduler_node_key

logger = logging.getLogger(__name__)


class Presence:
    """Parameters:
    redis: the Redis client.
    namespace: the key prefix.
    node_id: this node's id.
    started_at: when this node started.
    ttl_ms: how long a key outlives its last refresh.
    """

    def __init__(
        self, redis: Any, *, namespace: str, node_id: str, started_at: datetime, ttl_ms: int
    ) -> None:
        self.redis = redis
        self.key = scheduler_node_key(namespace, node_id)
        self.node_id = node_id
        self.started_at = started_at
        self.ttl_ms = ttl_ms

    def refresh(self, *, leader: bool) -> None:
        """Write the key again; a Redis error is logged (the dashboard then misses this node)."""
        presence = {
            "node_id": self.node_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat(),
            "leader": leader,
        }
        try:
            self.redis.set(self.key, json.dumps(presence), px=self.ttl_ms)
        except RedisError:
            logger.warning("could not refresh presence key", extra={"node_id": self.node_id})

    def remove(self) -> None:
        try:
            self.redis.delete(self.key)
        except RedisError:
            logger.warning("could not remove presence key", extra={"node_id": self.node_id})
