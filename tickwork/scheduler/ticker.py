"""The ticker: when the next tick runs, and one tick at a time.

A tick fires what is due (the caller's ``fire``) and arms the next wake-up at the earliest
``next_fire_at`` (the caller's ``earliest``), ``lead`` seconds ahead, or at the idle poll at the
latest. APScheduler runs the ticks; :class:`WakeTrigger` asks the ticker when the next one is.
A wake-up during a tick makes that tick go round once more instead of running beside it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger

from tickwork.vocabulary import utcnow

logger = logging.getLogger(__name__)

#: The ticker looks at the database at least this often, for changes nobody announced.
IDLE_POLL_SECONDS = 2.0
#: The ticker writes an imminent fire's rows this long before its instant (adapted to the last
#: transaction's duration) and publishes at the instant itself.
MIN_LEAD_SECONDS = 0.005
MAX_LEAD_SECONDS = 0.5


class Ticker:
    """Parameters:
    fire: fires what is due by the given instant (None: now).
    earliest: the earliest ``next_fire_at`` of an enabled job, or None.
    is_leader: whether this node may fire.
    stopped: whether the node is shutting down.
    node_id: for the log lines.
    """

    def __init__(
        self,
        *,
        fire: Callable[[datetime | None], object],
        earliest: Callable[[], datetime | None],
        is_leader: Callable[[], bool],
        stopped: Callable[[], bool],
        node_id: str = "",
    ) -> None:
        self.fire = fire
        self.earliest = earliest
        self.is_leader = is_leader
        self.stopped = stopped
        self.node_id = node_id
        #: The next fire instant the last tick saw (None: nothing due, or not leading).
        self.next_wake: datetime | None = None
        #: How long before ``next_wake`` the tick starts (see :data:`MIN_LEAD_SECONDS`).
        self.lead = MIN_LEAD_SECONDS
        self._reschedule: Callable[[datetime], None] | None = None
        self._lock = threading.Lock()
        self._pending = threading.Event()

    def trigger(self, reschedule: Callable[[datetime], None]) -> WakeTrigger:
        """The APScheduler trigger of the ticks; ``reschedule`` moves the next one earlier."""
        self._reschedule = reschedule
        return WakeTrigger(self)

    def next_run_time(self, now: datetime) -> datetime:
        """The wake-up the last tick asked for, else an idle poll."""
        fallback = now + timedelta(seconds=IDLE_POLL_SECONDS)
        wake = self.next_wake
        if wake is not None:
            wake -= timedelta(seconds=self.lead)
            if now < wake < fallback:
                return wake
        return fallback

    @property
    def busy(self) -> bool:
        """True while a tick runs (fires, publishes)."""
        return self._lock.locked()

    def seconds_to_next_tick(self) -> float | None:
        """Seconds until the next imminent tick starts (negative: it is due), None if none is
        armed. The outbox sweep publishes only in the gaps (:meth:`SchedulerService.make_room`)."""
        wake = self.next_wake
        if wake is None:
            return None
        return (wake - utcnow()).total_seconds() - self.lead

    def request(self) -> None:
        """Ask for a tick (a running tick goes round once more)."""
        self._pending.set()

    def tick(self) -> None:
        self._pending.set()
        while self._pending.is_set() and not self.stopped():
            if not self._lock.acquire(blocking=False):
                return  # the running tick sees _pending and goes round once more
            try:
                self._pending.clear()
                if not self.is_leader():
                    self.next_wake = None
                    continue
                target = self.next_wake
                ahead = (target - utcnow()).total_seconds() if target is not None else -1.0
                self.fire(target if 0 < ahead <= MAX_LEAD_SECONDS + 0.05 else None)
                self.arm(self.earliest())
            except Exception:
                logger.exception("tick failed", extra={"node_id": self.node_id})
                self.arm(utcnow() + timedelta(seconds=1))
            finally:
                self._lock.release()

    def arm(self, when: datetime | None) -> None:
        """Wake up ``lead`` seconds before ``when`` (unless the idle poll comes first)."""
        self.next_wake = when
        if when is None or self.stopped() or self._reschedule is None:
            return
        now = datetime.now(tz=UTC)
        wake_at = when - timedelta(seconds=self.lead)
        if wake_at - now > timedelta(seconds=IDLE_POLL_SECONDS):
            return  # the trigger's idle poll comes first
        self._reschedule(max(wake_at, now))


class WakeTrigger(BaseTrigger):  # type: ignore[misc]
    """The ticker's APScheduler trigger: :meth:`Ticker.next_run_time`."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        return self.ticker.next_run_time(now)
