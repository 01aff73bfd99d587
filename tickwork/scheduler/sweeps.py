"""The leader's sweeps: republish unclaimed attempts (the outbox), reap dead workers' attempts,
prune old run rows. Each is called by the scheduler service only while it leads."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import dramatiq
from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.heartbeats import HeartbeatStore
from tickwork.messaging import queue_name, ready_messages
from tickwork.scheduler.reaper import reap_lost_attempts
from tickwork.store.alerts import prune_notifications, sweep_late, sweep_recovered
from tickwork.store.fires import PendingAttempt, pending_unclaimed, prune_runs
from tickwork.store.retention import prune_operations
from tickwork.vocabulary import utcnow

logger = logging.getLogger(__name__)

OUTBOX_SWEEP_SECONDS = 1.0
#: A committed attempt that was never published (its leader died between commit and publish) is
#: republished this long after it became due, not after the full outbox grace.
UNPUBLISHED_GRACE_SECONDS = 2.0
#: A published, unclaimed attempt behind a queue backlog is republished after this many outbox
#: grace periods anyway (5 min by default): at most one duplicate per such period, never lost.
BACKLOG_GRACE_FACTOR = 10
#: The sweep publishes at most this many attempts at a time, and before each chunk waits for a
#: gap between the ticker's fires (``make_room``): a backfill's ~200 fires a second go out in
#: the ticker's idle time instead of one burst that delays an on-time fire's publish.
OUTBOX_CHUNK = 50
WORKER_SWEEP_SECONDS = 5.0
#: Retention runs every minute for at most 45 s, 1,000 rows a transaction, each one in a gap
#: between the ticker's fires (the service's ``make_room``). At 100,000 minutely schedules
#: (1,667 fires a second) that deleted 2,700-4,000 rows a second, 120,000-180,000 in 45 s
#: against the 100,000 a minute the fires create (back to back it deleted ~15,000 a second,
#: and the per-second publish lag p99 went from ~250 to 400-570 ms while it ran).
RETENTION_SECONDS = 60.0
RETENTION_MAX_SECONDS = 45.0
#: Issue 13: late fires and recoveries are looked for this often; due notifications too.
ALERT_SWEEP_SECONDS = 1.0
NOTIFY_POLL_SECONDS = 1.0
RETENTION_BATCH = 1000


def sweep_outbox(
    settings: Settings,
    engine: Engine,
    broker: dramatiq.Broker,
    *,
    publish: Callable[[list[PendingAttempt]], int],
    is_leader: Callable[[], bool],
    node_id: str = "",
    make_room: Callable[[], object] | None = None,
) -> int:
    """Republish PENDING attempts no worker claimed within ``outbox_grace_seconds``.

    Attempts never published go out again whatever the queue holds. Published ones are
    republished when their queue has no messages waiting (behind a backlog they are simply
    not consumed yet, and republishing the backlog every grace period would pile duplicates
    onto it), or once they have waited :data:`BACKLOG_GRACE_FACTOR` grace periods.

    ``make_room`` (the service's: wait for a gap between the ticker's fires) is called before
    the query and before each chunk of :data:`OUTBOX_CHUNK` attempts.
    """
    total = 0
    while is_leader():
        if make_room is not None:
            make_room()
        stale = pending_unclaimed(
            engine,
            grace_seconds=settings.outbox_grace_seconds,
            unpublished_grace_seconds=min(UNPUBLISHED_GRACE_SECONDS, settings.outbox_grace_seconds),
        )
        if not stale:
            break
        backlog: dict[str, int | None] = {}
        lost = []
        # Behind a backlog for this long, a message is presumed lost after all: a queue that
        # never empties must not keep a lost attempt from running.
        overdue = utcnow() - timedelta(seconds=settings.outbox_grace_seconds * BACKLOG_GRACE_FACTOR)
        for attempt in stale:
            if attempt.enqueued_at is not None and attempt.enqueued_at > overdue:
                queue = queue_name(settings, attempt.job.queue)
                if queue not in backlog:
                    backlog[queue] = ready_messages(broker, queue)
                if backlog[queue] != 0:
                    continue
            lost.append(attempt)
        if not lost:
            break
        logger.info("republishing %d unclaimed attempts", len(lost), extra={"node_id": node_id})
        done = 0
        for start in range(0, len(lost), OUTBOX_CHUNK):
            chunk = lost[start : start + OUTBOX_CHUNK]
            if start and make_room is not None:
                make_room()
            if not is_leader():
                break
            sent = publish(chunk)
            done += sent
            if sent < len(chunk):
                break
        total += done
        if done < len(lost) or len(stale) < 1000:
            break
    return total


class DeadWorkerSweep:
    """Fails (and retries per policy) RUNNING attempts that no live worker runs (:mod:`.reaper`).

    The heartbeat store is opened on the first sweep (a standby never needs it). ``keep_going``
    is asked between attempts (the scheduler passes "leading and not stopping").
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        broker: dramatiq.Broker,
        *,
        node_id: str = "",
        keep_going: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.broker = broker
        self.node_id = node_id
        self.keep_going = keep_going
        self.heartbeats: HeartbeatStore | None = None

    def __call__(self) -> int:
        if self.heartbeats is None:
            self.heartbeats = HeartbeatStore.from_settings(self.settings)
        try:
            return reap_lost_attempts(
                self.settings, self.engine, self.broker, self.heartbeats, keep_going=self.keep_going
            )
        except Exception:
            logger.exception("dead-worker sweep failed", extra={"node_id": self.node_id})
            return 0

    def close(self) -> None:
        if self.heartbeats is not None:
            self.heartbeats.close()


def prune_retention(
    settings: Settings, engine: Engine, *, keep_going: Callable[[], bool], node_id: str = ""
) -> int:
    """Delete finished run rows and audit events older than ``retention_days``, and
    idempotency keys past their 24 hours."""
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    deleted = prune_runs(
        engine,
        older_than=cutoff,
        batch_size=RETENTION_BATCH,
        max_seconds=RETENTION_MAX_SECONDS,
        keep_going=keep_going,
    )
    if deleted:
        logger.info("pruned %d run rows", deleted, extra={"node_id": node_id})
    prune_operations(engine, runs_cutoff=cutoff)
    prune_notifications(engine, older_than=cutoff)  # issue 13: the outbox's history
    return deleted


def sweep_alerts(
    settings: Settings, engine: Engine, *, keep_going: Callable[[], bool], node_id: str = ""
) -> int:
    """Issue 13: report late fires (``job.late``) and recoveries (``job.recovered``)."""
    try:
        late = sweep_late(
            engine,
            notify_url=settings.notify_url,
            lookback_seconds=settings.late_lookback_seconds,
            keep_going=keep_going,
        )
        return late + sweep_recovered(engine, notify_url=settings.notify_url)
    except Exception:
        logger.exception("alert sweep failed", extra={"node_id": node_id})
        return 0
