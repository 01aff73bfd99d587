"""The scheduler service: one node, a small composition of its parts, driven by APScheduler.

Every node runs the same :class:`SchedulerService`; the one holding the leader lease fires.
The parts, each in its own module:

``lease`` (:mod:`.leader`)
    renewed (leader) or tried (standby) every ``leader_renew_ms``; becoming leader wakes the
    ticker at once. :class:`~.presence.Presence` refreshes this node's key on the same beat.
``ticker`` (:mod:`.ticker`)
    wakes at the earliest due ``next_fire_at``, at the idle poll at the latest, and at once on
    :meth:`SchedulerService.wake` (the API and the CLI publish on the Redis wake channel, which
    :class:`~.wake.WakeListener` hears). Fires through :mod:`tickwork.store.fires` and publishes
    with :class:`~.publisher.Publisher`.
``outbox-sweep``, ``worker-sweep``, ``retention`` (:mod:`.sweeps`)
    republish unclaimed PENDING attempts; fail attempts of dead workers (:mod:`.reaper`);
    prune old run rows (and delivered or failed notifications).
``alert-sweep``, ``notify`` (issue 13, :mod:`.sweeps`, :mod:`tickwork.notify`)
    report late fires and recoveries (:mod:`tickwork.store.alerts`); deliver due webhook
    notifications on a thread of their own, never the ticker's.

Each act checks the lease first. The ticker's own APScheduler settings are deliberate:
``misfire_grace_time=None`` (a late wake-up still runs: never dropped), ``coalesce=True`` and a
non-blocking lock inside (a wake-up during a tick makes that tick go round once more).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime
from typing import Any

import dramatiq
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from tickwork import tracing
from tickwork.config import Settings
from tickwork.keys import leader_key
from tickwork.messaging import make_broker
from tickwork.metrics import get_metrics
from tickwork.notify import Deliverer
from tickwork.scheduler.leader import LeaderLease, Lease, LocalLease
from tickwork.scheduler.presence import Presence
from tickwork.scheduler.publisher import Publisher
from tickwork.scheduler.sweeps import (
    ALERT_SWEEP_SECONDS,
    NOTIFY_POLL_SECONDS,
    OUTBOX_SWEEP_SECONDS,
    RETENTION_SECONDS,
    WORKER_SWEEP_SECONDS,
    DeadWorkerSweep,
    prune_retention,
    sweep_alerts,
    sweep_outbox,
)
from tickwork.scheduler.ticker import IDLE_POLL_SECONDS, MAX_LEAD_SECONDS, MIN_LEAD_SECONDS, Ticker
from tickwork.scheduler.wake import WakeListener
from tickwork.store.engine import ensure_migrated, make_engine
from tickwork.store.fires import PendingAttempt, earliest_next_fire, fire_due_jobs_safely
from tickwork.vocabulary import utcnow

__all__ = ["IDLE_POLL_SECONDS", "MAX_LEAD_SECONDS", "MIN_LEAD_SECONDS", "SchedulerService", "default_node_id"]

logger = logging.getLogger(__name__)

#: The outbox sweep publishes a chunk only when the ticker's next tick is further away than this
#: (a 50-message chunk takes ~10-30 ms on a busy 2-core host) ...
SWEEP_GUARD_SECONDS = 0.15
#: ... or that tick is this far past due without having started (the ticker is not about to run).
SWEEP_STALE_SECONDS = 0.25
#: It waits at most this long per chunk, so the outbox progresses beside a ticker busy all the time.
SWEEP_YIELD_MAX_SECONDS = 1.0
SWEEP_YIELD_POLL_SECONDS = 0.005


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


#: The service's jobs whose runs may outlast their interval by design.
_MAY_OUTLAST_INTERVAL = frozenset({"outbox-sweep", "worker-sweep", "retention", "alert-sweep", "notify"})


class _ExpectedOverlap(logging.Filter):
    """APScheduler warns whenever a job's interval comes round while its last run still goes on.
    For the sweeps that is by design: the outbox sweep waits up to :data:`SWEEP_YIELD_MAX_SECONDS`
    for a gap between the ticker's fires, every second; retention runs up to 20 s a minute. A
    leader of 1,000 every-second schedules on a loaded host logged 304 such warnings in 10
    minutes (benchmarks/lease_watch.py), with nothing wrong. Those are logged at DEBUG; a skipped
    lease renewal or tick (other jobs, another scheduler's) stays a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not str(record.msg).startswith("Execution of job"):
            return True
        job = record.args[0] if isinstance(record.args, tuple) and record.args else None
        owner = getattr(getattr(job, "func", None), "__self__", None)
        if getattr(job, "id", None) not in _MAY_OUTLAST_INTERVAL or not isinstance(owner, SchedulerService):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_expected_overlap = _ExpectedOverlap()


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
        self.started_at = utcnow()
        self.redis: Any = None
        self.lease: Lease
        self.presence: Presence | None = None
        self.listener: WakeListener | None = None
        if settings.redis_url:
            import redis

            self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
            self.lease = LeaderLease(
                self.redis,
                leader_key(settings.namespace),
                node_id=self.node_id,
                ttl_ms=settings.leader_ttl_ms,
                # A standby takes a dead leader's lease the moment it expires (issue 15).
                wait_ms=int(settings.leader_renew_ms * 0.9),
            )
            self.presence = Presence(
                self.redis,
                namespace=settings.namespace,
                node_id=self.node_id,
                started_at=self.started_at,
                ttl_ms=max(settings.leader_ttl_ms, 3 * settings.leader_renew_ms),
            )
            self.listener = WakeListener(
                self.redis, namespace=settings.namespace, on_wake=self.wake, node_id=self.node_id
            )
        else:
            self.lease = LocalLease(
                leader_key(settings.namespace), node_id=self.node_id, ttl_ms=settings.leader_ttl_ms
            )
        self._stop = threading.Event()
        self.publisher = Publisher(settings, self.engine, self.broker, node_id=self.node_id)
        self.ticker = Ticker(
            fire=lambda until: self.fire_due(until=until),
            earliest=lambda: earliest_next_fire(self.engine),
            is_leader=lambda: self.is_leader,
            stopped=self._stop.is_set,
            node_id=self.node_id,
        )
        self.dead_workers = DeadWorkerSweep(
            settings, self.engine, self.broker, node_id=self.node_id, keep_going=self._leading
        )
        logging.getLogger("apscheduler.scheduler").addFilter(_expected_overlap)  # once: same instance
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
        self.deliverer = Deliverer(settings, self.engine, keep_going=self._leading)
        self._was_leader = False
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
        tracing.configure(self.settings.traces_exporter, "tickwork-scheduler")
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
            self.ticker.tick,
            self.ticker.trigger(self._reschedule_ticker),
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
        if self.listener is not None:
            self.listener.start()
        logger.info("scheduler started", extra={"node_id": self.node_id})

    def shutdown(self, *, release: bool = True) -> None:
        """Stop the jobs; give the lease up (``release``) so a standby takes over at once."""
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        if release:
            self.lease.release()
        if self.presence is not None:
            self.presence.remove()
        if self.listener is not None:
            self.listener.stop(timeout=3)
        self.dead_workers.close()
        self.deliverer.close()
        if self._own_broker:
            self.broker.close()
        if self._own_engine:
            self.engine.dispose()
        logger.info("scheduler stopped", extra={"node_id": self.node_id})

    def wake(self) -> None:
        """Recompute the wake-up now (a job was created or changed)."""
        self.ticker.request()
        if self._scheduler.running:
            self._reschedule_ticker(datetime.now(tz=self._scheduler.timezone))

    def _reschedule_ticker(self, when: datetime) -> None:
        try:
            self._scheduler.modify_job("ticker", next_run_time=when)
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
        if self.presence is not None:
            self.presence.refresh(leader=leader)

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
                took = self.publisher.prepared_at - started
                self.ticker.lead = min(MAX_LEAD_SECONDS, max(MIN_LEAD_SECONDS, took * 2 + 0.010))
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

    def publish_attempts(self, attempts: list[PendingAttempt], *, hold_until_due: bool = False) -> int:
        """Publish committed attempts (:meth:`Publisher.publish`); returns how many went out."""
        done = self.publisher.publish(attempts, hold_until_due=hold_until_due)
        self.stats["published"] += done
        return done

    def sweep_outbox(self) -> int:
        """Republish PENDING attempts no worker claimed in time (:func:`.sweeps.sweep_outbox`)."""
        if not self.is_leader:
            return 0
        total = sweep_outbox(
            self.settings,
            self.engine,
            self.broker,
            publish=self.publish_attempts,
            # Not only while leading: a shutdown stops it between chunks (the lease is released
            # after the jobs have ended, so a sweep going on would hold the shutdown up).
            is_leader=self._leading,
            node_id=self.node_id,
            make_room=self.make_room,
        )
        self.stats["republished"] += total
        return total

    def make_room(self) -> float:
        """Wait until the ticker is neither firing nor about to (within
        :data:`SWEEP_GUARD_SECONDS`), at most :data:`SWEEP_YIELD_MAX_SECONDS`; returns the
        seconds waited.

        The outbox sweep calls it before each chunk it publishes: a backfill's fires (and any
        republished ones) then share neither the GIL, the broker nor the database with an
        on-time fire's tick, whose publish lag stays that of a scheduler without a backfill.
        Bounded, so a ticker busy all the time still lets the outbox progress.
        """
        began = time.monotonic()
        deadline = began + SWEEP_YIELD_MAX_SECONDS
        while time.monotonic() < deadline and not self._stop.is_set():
            if not self.ticker.busy:
                ahead = self.ticker.seconds_to_next_tick()
                # Past due by more than the stale margin: the ticker is not about to run it.
                if ahead is None or ahead > SWEEP_GUARD_SECONDS or ahead < -SWEEP_STALE_SECONDS:
                    break
            time.sleep(SWEEP_YIELD_POLL_SECONDS)
        return time.monotonic() - began

    def sweep_dead_workers(self) -> int:
        """Fail (and retry per policy) RUNNING attempts that no live worker runs."""
        if not self.is_leader:
            return 0
        return self.dead_workers()

    def prune_retention(self) -> int:
        """Delete finished run rows and audit events older than ``retention_days``, and
        idempotency keys past their 24 hours."""
        if not self.is_leader:
            return 0
        return prune_retention(
            self.settings, self.engine, keep_going=self._room_to_prune, node_id=self.node_id
        )

    def _room_to_prune(self) -> bool:
        """Asked before each retention batch: still leading, after a gap between the ticker's
        fires (:meth:`make_room`). Back to back, batches deleting an expired history under
        100,000 schedules shared the GIL and MariaDB with the ticks: the per-second publish lag
        p99 went from ~250 to 400-570 ms while they ran (``scale.py --history-age-days 40``)."""
        if not self._leading():
            return False
        self.make_room()
        return self._leading()

    def _leading(self) -> bool:
        return self.is_leader and not self._stop.is_set()

    def sweep_alerts(self) -> int:
        """Issue 13: report late fires and recoveries (:func:`.sweeps.sweep_alerts`)."""
        if not self.is_leader:
            return 0
        return sweep_alerts(self.settings, self.engine, keep_going=self._leading, node_id=self.node_id)

    def deliver_notifications(self) -> int:
        """Issue 13: POST due webhook notifications (on the ``notify`` thread)."""
        if not self.is_leader:
            return 0
        try:
            return self.deliverer.deliver_due()
        except Exception:
            logger.exception("notification delivery failed", extra={"node_id": self.node_id})
            return 0
