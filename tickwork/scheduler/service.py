"""The scheduler service: APScheduler drives the ticker, the lease and the sweeps.

Every node runs the same :class:`SchedulerService`; the one holding the leader lease fires.
APScheduler jobs (all in one ``BackgroundScheduler``):

``lease``
    every ``leader_renew_ms``: renew (leader) or try to take (standby) the lease, refresh this
    node's presence key. Becoming leader wakes the ticker at once.
``ticker``
    wakes at the earliest due ``next_fire_at`` (re-armed after every tick with
    ``modify_job(next_run_time=…)``), at :data:`IDLE_POLL_SECONDS` at the latest, and at once
    on :meth:`SchedulerService.wake` (the API publishes on the Redis wake channel).
``outbox-sweep``, ``worker-sweep``, ``retention``
    republish unclaimed PENDING attempts; fail attempts of dead workers; prune old run rows
    (and delivered or failed notifications).
``alert-sweep``, ``notify`` (issue 13)
    report late fires and recoveries (:mod:`tickwork.store.alerts`); deliver due webhook
    notifications on a thread of their own (:mod:`tickwork.notify`), never the ticker's.

Each act checks the lease first. The ticker's own APScheduler settings are deliberate:
``misfire_grace_time=None`` (a late wake-up still runs: never dropped), ``coalesce=True`` and a
non-blocking lock inside (a wake-up during a tick makes that tick go round once more).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from redis.exceptions import RedisError
from sqlalchemy import Engine

from tickwork.amqp import PreparedBatch
from tickwork.config import Settings
from tickwork.keys import leader_key, scheduler_node_key, scheduler_wake_channel
from tickwork.messaging import (
    build_message,
    make_broker,
    prepare_publish,
    publish_batch,
    queue_name,
    ready_messages,
)
from tickwork.metrics import get_metrics
from tickwork.middleware.heartbeat import HeartbeatStore, reap_lost_attempts
from tickwork.notify import Deliverer
from tickwork.scheduler.leader import LeaderLease, Lease, LocalLease
from tickwork.store.alerts import prune_notifications, sweep_late, sweep_recovered
from tickwork.store.engine import ensure_migrated, make_engine
from tickwork.store.fires import (
    Attempt,
    earliest_next_fire,
    fire_due_jobs_safely,
    pending_unclaimed,
    prune_runs,
)
from tickwork.store.models import utcnow
from tickwork.store.runs import mark_enqueued

logger = logging.getLogger(__name__)

#: The ticker looks at the database at least this often, for changes nobody announced.
IDLE_POLL_SECONDS = 2.0
OUTBOX_SWEEP_SECONDS = 1.0
#: A committed attempt that was never published (its leader died between commit and publish) is
#: republished this long after it became due, not after the full outbox grace.
UNPUBLISHED_GRACE_SECONDS = 2.0
#: A published, unclaimed attempt behind a queue backlog is republished after this many outbox
#: grace periods anyway (5 min by default): at most one duplicate per such period, never lost.
BACKLOG_GRACE_FACTOR = 10
WORKER_SWEEP_SECONDS = 5.0
#: Retention runs every minute for at most 20 s, 1,000 rows a transaction: ~3,000 deletions a
#: second at most, above the rate of a scheduler firing 1,000 jobs a second.
RETENTION_SECONDS = 60.0
RETENTION_MAX_SECONDS = 20.0
RETENTION_BATCH = 1000
#: Issue 13: late fires and recoveries are looked for this often; due notifications too.
ALERT_SWEEP_SECONDS = 1.0
NOTIFY_POLL_SECONDS = 1.0
#: The ticker writes an imminent fire's rows this long before its instant (adapted to the last
#: transaction's duration) and publishes at the instant itself.
MIN_LEAD_SECONDS = 0.005
MAX_LEAD_SECONDS = 0.5


class _WakeTrigger(BaseTrigger):  # type: ignore[misc]
    """The ticker's trigger: the wake-up the last tick asked for, else an idle poll."""

    def __init__(self, service: SchedulerService) -> None:
        self._service = service

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        fallback = now + timedelta(seconds=IDLE_POLL_SECONDS)
        wake = self._service._next_wake
        if wake is not None:
            wake -= timedelta(seconds=self._service._lead)
            if now < wake < fallback:
                return wake
        return fallback


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class SchedulerService:
    """One scheduler node. Safe to run on any number of nodes at once.

    Parameters:
      settings: the one :class:`~tickwork.config.Settings`.
      engine: the database engine (made from ``settings`` if omitted; must be migrated).
      broker: the Dramatiq broker to publish on (made from ``settings`` if omitted).
      node_id: this node's id in the lease and presence keys (hostname-pid-random if omitted).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        broker: dramatiq.Broker | None = None,
        node_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.node_id = node_id or default_node_id()
        self._own_engine = engine is None
        self.engine = engine if engine is not None else make_engine(settings)
        self._own_broker = broker is None
        self.broker = broker if broker is not None else make_broker(settings)
        self.redis: Any = None
        self.lease: Lease
        if settings.redis_url:
            import redis

            self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
            self.lease = LeaderLease(
                self.redis,
                leader_key(settings.namespace),
                node_id=self.node_id,
                ttl_ms=settings.leader_ttl_ms,
            )
        else:
            self.lease = LocalLease(
                leader_key(settings.namespace), node_id=self.node_id, ttl_ms=settings.leader_ttl_ms
            )
        self._scheduler = BackgroundScheduler(
            timezone="UTC",
            # The ticker always runs on one thread: it keeps one warm broker connection and
            # transactional channel (Dramatiq's are per thread).
            executors={
                "default": ThreadPoolExecutor(max_workers=4),
                "ticker": ThreadPoolExecutor(max_workers=1),
                # Issue 13: webhook delivery on a thread of its own, never the ticker's.
                "notify": ThreadPoolExecutor(max_workers=1),
            },
        )
        self._next_wake: datetime | None = None
        self._lead = MIN_LEAD_SECONDS
        self._prepared_at = 0.0
        self._tick_lock = threading.Lock()
        self._pending = threading.Event()
        self._was_leader = False
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._heartbeats: HeartbeatStore | None = None
        self._deliverer = Deliverer(settings, self.engine, keep_going=self._leading)
        self.started_at = utcnow()
        #: Counters for tests, metrics and the benchmark.
        self.stats: dict[str, int] = {"ticks": 0, "published": 0, "republished": 0, "rows": 0}

    # -- life cycle -------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this node's lease is certainly valid."""
        return self.lease.is_held()

    def start(self) -> None:
        """Start the APScheduler jobs and the wake listener; returns at once."""
        ensure_migrated(self.engine)
        now = datetime.now(tz=self._scheduler.timezone)
        renew = self.settings.leader_renew_ms / 1000.0
        self._scheduler.add_job(
            self._renew_lease,
            IntervalTrigger(seconds=renew),
            id="lease",
            next_run_time=now,
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1,
        )
        self._scheduler.add_job(
            self._tick,
            _WakeTrigger(self),
            id="ticker",
            executor="ticker",
            next_run_time=now,
            misfire_grace_time=None,
            coalesce=True,
            max_instances=3,
        )
        for job_id, func, seconds in (
            (
                "outbox-sweep",
                self.sweep_outbox,
                min(OUTBOX_SWEEP_SECONDS, self.settings.outbox_grace_seconds),
            ),
            ("worker-sweep", self.sweep_dead_workers, WORKER_SWEEP_SECONDS),
            ("retention", self.prune_retention, RETENTION_SECONDS),
            ("alert-sweep", self.sweep_alerts, ALERT_SWEEP_SECONDS),  # issue 13
        ):
            self._scheduler.add_job(
                func,
                IntervalTrigger(seconds=seconds),
                id=job_id,
                misfire_grace_time=None,
                coalesce=True,
                max_instances=1,
            )
        self._scheduler.add_job(  # issue 13: the notifications outbox, leader only
            self.deliver_notifications,
            IntervalTrigger(seconds=NOTIFY_POLL_SECONDS),
            id="notify",
            executor="notify",
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1,
        )
        self._scheduler.start()
        if self.redis is not None:
            self._listener = threading.Thread(target=self._listen, name="tickwork-wake", daemon=True)
            self._listener.start()
        logger.info("scheduler started", extra={"node_id": self.node_id})

    def shutdown(self, *, release: bool = True) -> None:
        """Stop the jobs; give the lease up (``release``) so a standby takes over at once."""
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        if release:
            self.lease.release()
        if self.redis is not None:
            try:
                self.redis.delete(scheduler_node_key(self.settings.namespace, self.node_id))
            except RedisError:
                logger.warning("could not remove presence key", extra={"node_id": self.node_id})
        if self._listener is not None:
            self._listener.join(timeout=3)
        if self._heartbeats is not None:
            self._heartbeats.close()
        self._deliverer.close()
        if self._own_broker:
            self.broker.close()
        if self._own_engine:
            self.engine.dispose()
        logger.info("scheduler stopped", extra={"node_id": self.node_id})

    def wake(self) -> None:
        """Recompute the wake-up now (a job was created or changed)."""
        self._pending.set()
        if self._scheduler.running:
            try:
                self._scheduler.modify_job("ticker", next_run_time=datetime.now(tz=self._scheduler.timezone))
            except JobLookupError:
                logger.debug("ticker not scheduled yet")

    # -- jobs -----------------------------------------------------------------------------------

    def _renew_lease(self) -> None:
        was_leader = self._was_leader
        leader = self.lease.try_acquire()
        result = (
            ("renewed" if was_leader else "acquired") if leader else ("lost" if was_leader else "standby")
        )
        get_metrics().record_lease(self.node_id, result, leader=leader)
        if leader and not self._was_leader:
            logger.info("became leader", extra={"node_id": self.node_id})
            self._was_leader = True
            self.wake()
        elif not leader and self._was_leader:
            logger.warning("no longer leader", extra={"node_id": self.node_id})
            self._was_leader = False
        if self.redis is not None:
            presence = {
                "node_id": self.node_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": self.started_at.isoformat(),
                "leader": leader,
            }
            ttl_ms = max(self.settings.leader_ttl_ms, 3 * self.settings.leader_renew_ms)
            try:
                self.redis.set(
                    scheduler_node_key(self.settings.namespace, self.node_id), json.dumps(presence), px=ttl_ms
                )
            except RedisError:
                logger.warning("could not refresh presence key", extra={"node_id": self.node_id})

    def _tick(self) -> None:
        self._pending.set()
        while self._pending.is_set() and not self._stop.is_set():
            if not self._tick_lock.acquire(blocking=False):
                return  # the running tick sees _pending and goes round once more
            try:
                self._pending.clear()
                if not self.is_leader:
                    self._next_wake = None
                    continue
                target = self._next_wake
                ahead = (target - utcnow()).total_seconds() if target is not None else -1.0
                self.fire_due(until=target if 0 < ahead <= MAX_LEAD_SECONDS + 0.05 else None)
                self._arm(earliest_next_fire(self.engine))
            except Exception:
                logger.exception("tick failed", extra={"node_id": self.node_id})
                self._arm(utcnow() + timedelta(seconds=1))
            finally:
                self._tick_lock.release()

    def _arm(self, when: datetime | None) -> None:
        self._next_wake = when
        if when is None or self._stop.is_set():
            return
        now = datetime.now(tz=self._scheduler.timezone)
        wake_at = when - timedelta(seconds=self._lead)
        if wake_at - now > timedelta(seconds=IDLE_POLL_SECONDS):
            return  # the trigger's idle poll comes first
        try:
            self._scheduler.modify_job("ticker", next_run_time=max(wake_at, now))
        except JobLookupError:
            logger.debug("ticker not scheduled")

    def fire_due(self, *, until: datetime | None = None) -> int:
        """Fire every job due by ``until`` (default now), publish; returns attempts published.

        With ``until`` slightly ahead, the rows are committed early and the messages go out at
        ``until`` itself. Many due jobs take several transactions, each published after commit.
        """
        published = 0
        while self.is_leader and not self._stop.is_set():
            started = time.monotonic()
            result = fire_due_jobs_safely(
                self.engine,
                now=utcnow(),
                until=until,
                default_grace_seconds=self.settings.misfire_grace_seconds,
                fire_all_limit=self.settings.fire_all_limit,
            )
            self.stats["ticks"] += 1
            self.stats["rows"] += sum(result.rows.values())
            get_metrics().record_fires(result.rows)
            done = self.publish_attempts(result.to_publish, hold_until_due=True)
            published += done
            if until is not None:
                # The next imminent fire starts early enough to commit and prepare before its
                # instant: twice what this one took, plus 10 ms.
                took = self._prepared_at - started
                self._lead = min(MAX_LEAD_SECONDS, max(MIN_LEAD_SECONDS, took * 2 + 0.010))
                until = None
            if result.rows:
                logger.info(
                    "fired %d jobs: %s; published %d",
                    result.claimed_jobs,
                    ", ".join(f"{count} {status}" for status, count in sorted(result.rows.items())),
                    done,
                    extra={"node_id": self.node_id},
                )
            for attempt in result.to_publish if logger.isEnabledFor(logging.DEBUG) else ():
                logger.debug(
                    "fire of job %s for %s",
                    attempt.job.name,
                    attempt.scheduled_for.isoformat(),
                    extra={"node_id": self.node_id, "job_id": attempt.job.id, "run_id": attempt.run_id},
                )
            if not result.more:
                break
        return published

    def publish_attempts(self, attempts: list[Attempt], *, hold_until_due: bool = False) -> int:
        """Publish committed attempts in batches, then record the publish times.

        With ``hold_until_due`` an attempt is not published before its ``scheduled_for`` (rows
        written ahead of the instant): each batch is built, encoded and marshalled first, and
        only sent at its instant. Each batch is durable on the broker before the next starts;
        the ``enqueued_at`` writes come after the last batch so that they do not delay it. A
        failed batch is logged and left PENDING: the outbox sweep republishes it.
        """
        size = self.settings.publish_batch_size
        chunks: list[list[Attempt]] = []
        start = 0
        while start < len(attempts):
            end = min(start + size, len(attempts))
            if hold_until_due:
                # Attempts are sorted by scheduled_for: a batch never mixes instants.
                due = attempts[start].scheduled_for
                end = next((i for i in range(start, end) if attempts[i].scheduled_for != due), end)
            chunks.append(attempts[start:end])
            start = end
        prepared: list[tuple[list[Attempt], PreparedBatch]] = []
        for chunk in chunks:
            try:
                prepared.append((chunk, prepare_publish(self.broker, [self._message(a) for a in chunk])))
            except Exception:
                logger.exception(
                    "preparing a publish failed; the outbox sweep will republish",
                    extra={"node_id": self.node_id, "run_id": chunk[0].run_id},
                )
        self._prepared_at = time.monotonic()
        published: list[tuple[list[int], datetime]] = []
        for chunk, batch in prepared:
            wait = (chunk[0].scheduled_for - utcnow()).total_seconds() if hold_until_due else 0.0
            if wait > 0:
                time.sleep(wait)
            try:
                publish_batch(self.broker, batch)
            except Exception:
                logger.exception(
                    "publish failed; the outbox sweep will republish",
                    extra={"node_id": self.node_id, "run_id": chunk[0].run_id},
                )
            else:
                published.append(([a.run_id for a in chunk], utcnow()))
        for run_ids, when in published:
            mark_enqueued(self.engine, run_ids, now=when)
        done = sum(len(ids) for ids, _ in published)
        self.stats["published"] += done
        return done

    def _message(self, attempt: Attempt) -> dramatiq.Message[Any]:
        return build_message(
            self.settings,
            attempt.job,
            run_id=attempt.run_id,
            attempt=attempt.attempt,
            scheduled_for=attempt.scheduled_for,
            arguments=attempt.arguments,
            trigger=attempt.trigger,
        )

    def sweep_outbox(self) -> int:
        """Republish PENDING attempts no worker claimed within ``outbox_grace_seconds``.

        Attempts never published go out again whatever the queue holds. Published ones are
        republished when their queue has no messages waiting (behind a backlog they are simply
        not consumed yet, and republishing the backlog every grace period would pile duplicates
        onto it), or once they have waited :data:`BACKLOG_GRACE_FACTOR` grace periods.
        """
        if not self.is_leader:
            return 0
        total = 0
        while self.is_leader:
            stale = pending_unclaimed(
                self.engine,
                grace_seconds=self.settings.outbox_grace_seconds,
                unpublished_grace_seconds=min(UNPUBLISHED_GRACE_SECONDS, self.settings.outbox_grace_seconds),
            )
            if not stale:
                break
            backlog: dict[str, int | None] = {}
            lost = []
            # Behind a backlog for this long, a message is presumed lost after all: a queue that
            # never empties must not keep a lost attempt from running.
            overdue = utcnow() - timedelta(seconds=self.settings.outbox_grace_seconds * BACKLOG_GRACE_FACTOR)
            for attempt in stale:
                if attempt.enqueued_at is not None and attempt.enqueued_at > overdue:
                    queue = queue_name(self.settings, attempt.job.queue)
                    if queue not in backlog:
                        backlog[queue] = ready_messages(self.broker, queue)
                    if backlog[queue] != 0:
                        continue
                lost.append(attempt)
            if not lost:
                break
            logger.info("republishing %d unclaimed attempts", len(lost), extra={"node_id": self.node_id})
            done = self.publish_attempts(lost)
            total += done
            if done < len(lost) or len(stale) < 1000:
                break
        self.stats["republished"] += total
        return total

    def sweep_dead_workers(self) -> int:
        """Fail (and retry per policy) RUNNING attempts that no live worker runs."""
        if not self.is_leader:
            return 0
        if self._heartbeats is None:
            self._heartbeats = HeartbeatStore.from_settings(self.settings)
        try:
            return reap_lost_attempts(self.settings, self.engine, self.broker, self._heartbeats)
        except Exception:
            logger.exception("dead-worker sweep failed", extra={"node_id": self.node_id})
            return 0

    def _leading(self) -> bool:
        return self.is_leader and not self._stop.is_set()

    def sweep_alerts(self) -> int:
        """Issue 13: report late fires (``job.late``) and recoveries (``job.recovered``)."""
        if not self.is_leader:
            return 0
        try:
            notify_url = self.settings.notify_url
            late = sweep_late(
                self.engine,
                notify_url=notify_url,
                lookback_seconds=self.settings.late_lookback_seconds,
                keep_going=self._leading,
            )
            return late + sweep_recovered(self.engine, notify_url=notify_url)
        except Exception:
            logger.exception("alert sweep failed", extra={"node_id": self.node_id})
            return 0

    def deliver_notifications(self) -> int:
        """Issue 13: POST due webhook notifications (on the ``notify`` thread)."""
        if not self.is_leader:
            return 0
        try:
            return self._deliverer.deliver_due()
        except Exception:
            logger.exception("notification delivery failed", extra={"node_id": self.node_id})
            return 0

    def prune_retention(self) -> int:
        """Delete finished run rows older than ``retention_days``."""
        if not self.is_leader:
            return 0
        cutoff = utcnow() - timedelta(days=self.settings.retention_days)
        deleted = prune_runs(
            self.engine,
            older_than=cutoff,
            batch_size=RETENTION_BATCH,
            max_seconds=RETENTION_MAX_SECONDS,
            keep_going=lambda: self.is_leader and not self._stop.is_set(),
        )
        if deleted:
            logger.info("pruned %d run rows", deleted, extra={"node_id": self.node_id})
        prune_notifications(self.engine, older_than=cutoff)  # issue 13: the outbox's history
        return deleted

    # -- wake-ups -------------------------------------------------------------------------------

    def _listen(self) -> None:
        channel = scheduler_wake_channel(self.settings.namespace)
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self.wake()
            except (RedisError, OSError):
                logger.warning("wake channel lost; resubscribing", extra={"node_id": self.node_id})
                self._stop.wait(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except (RedisError, OSError):
                        logger.debug("pubsub close failed")
