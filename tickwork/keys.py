"""Redis key names, in one place, so the scheduler, workers and dashboard agree."""

from __future__ import annotations


def leader_key(namespace: str) -> str:
    """The scheduler lease; its value is ``"<node_id> <random token>"``."""
    return f"{namespace}:scheduler:leader"


def scheduler_node_key(namespace: str, node_id: str) -> str:
    """Presence of one scheduler node (TTL), value JSON ``{"node_id", "host", "pid", "started_at"}``."""
    return f"{namespace}:scheduler:node:{node_id}"


def scheduler_wake_channel(namespace: str) -> str:
    """Pub/sub channel: a job was created or changed, the ticker should recompute its wake-up."""
    return f"{namespace}:scheduler:wake"


def worker_heartbeat_key(namespace: str, worker_id: str) -> str:
    """Heartbeat of one worker process (TTL), value JSON ``{"worker_id", "host", "pid", ...}``."""
    return f"{namespace}:worker:{worker_id}"


def worker_heartbeats_since_key(namespace: str) -> str:
    """Since when (Redis server time, epoch seconds) the heartbeat keys have been kept: set once
    with NX, it disappears with them when Redis restarts empty, so a missing heartbeat is only
    believed once the workers have had one TTL to beat again."""
    return f"{namespace}:workers:since"


def worker_heartbeat_pattern(namespace: str) -> str:
    return f"{namespace}:worker:*"


def scheduler_node_pattern(namespace: str) -> str:
    return f"{namespace}:scheduler:node:*"
