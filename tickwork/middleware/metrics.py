"""Metrics: Prometheus counters and histograms for every attempt a worker processes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from dramatiq.middleware import Middleware

from tickwork.messaging import OPTION
from tickwork.metrics import TickworkMetrics, get_metrics
from tickwork.vocabulary import RunTrigger

#: Label for messages that name no queue (never the case for a tickwork message).
DEFAULT_QUEUE_LABEL = "default"
#: The attribute of a delivery holding when it started (timer, wall clock), its queue label and
#: that queue's in-progress gauge.
_STARTED = "tickwork_metrics_started"


class Metrics(Middleware):
    """Records runs by job and status, attempt durations, scheduling lag, retries and dead letters.

    It reads only ``message.options["tickwork"]`` (run id, job name, attempt, ``scheduled_for``,
    ``retry_count``), so it costs no database or broker call; messages without those options
    (plain Dramatiq actors) are ignored. A message skipped by another middleware (an attempt
    already claimed elsewhere) counts as skipped, not as a run. Scheduling lag is observed for
    first attempts only: a retry starts late on purpose.

    Parameters:
      metrics: where to record (default: the process-wide :func:`tickwork.metrics.get_metrics`).
      wall_clock: seconds since the epoch, for the lag (tests pass a fake).
      timer: a monotonic clock, for durations.
    """

    def __init__(
        self,
        *,
        metrics: TickworkMetrics | None = None,
        wall_clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.metrics = metrics or get_metrics()
        self.wall_clock = wall_clock
        self.timer = timer
        #: (metric, labels) → the labelled child: prometheus-client's ``labels()`` validates and
        #: locks on every call, a few µs each, five calls per attempt on the worker's hot path.
        self._children: dict[tuple[Any, ...], Any] = {}
        #: A delivery's queue name → (its label, the in-progress gauge's child for it).
        self._queues: dict[str | None, tuple[str, Any]] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _queue_of(self, message: MessageProxy) -> tuple[str, Any]:
        """The delivery's queue label and that queue's in-progress gauge."""
        name = message.queue_name
        known = self._queues.get(name)
        if known is None:
            label = _queue(name)
            known = self._queues[name] = (label, self._child(self.metrics.in_progress, label))
        return known

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if _run_options(message) is None:
            return
        label, in_progress = self._queue_of(message)
        # On the delivery itself (Dramatiq's per-delivery proxy): no shared map, no lock.
        setattr(message, _STARTED, (self.timer(), self.wall_clock(), label, in_progress))
        in_progress.inc()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        started = self._pop(message)
        if started is None:
            return
        options = _run_options(message)
        if options is None:
            return
        timer, wall, queue, in_progress = started
        in_progress.dec()
        job_name = str(options.get("job_name") or message.actor_name)
        attempt = int(options.get("attempt") or 1)
        if exception is None:
            status = "SUCCESS"
        elif attempt <= int(options.get("retry_count") or 0):
            status = "FAILED"
            self._child(self.metrics.retries, job_name).inc()
        else:
            status = "DEAD"
            self._child(self.metrics.dead_letters, job_name).inc()
        self._child(self.metrics.runs, job_name, status).inc()
        self._child(self.metrics.attempt_duration, queue, status).observe(max(0.0, self.timer() - timer))
        if attempt == 1:
            lag = _lag_seconds(options.get("scheduled_for"), wall)
            if lag is not None:
                trigger = str(options.get("trigger") or RunTrigger.SCHEDULE.value)
                self._child(self.metrics.scheduling_lag, queue, trigger).observe(lag)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if _run_options(message) is None:
            return
        started = self._pop(message)
        if started is not None:
            started[3].dec()
        self._child(self.metrics.skipped_messages, self._queue_of(message)[0]).inc()

    def _pop(self, message: MessageProxy) -> tuple[float, float, str, Any] | None:
        started: tuple[float, float, str, Any] | None = getattr(message, _STARTED, None)
        if started is not None:
            setattr(message, _STARTED, None)
        return started


def _run_options(message: MessageProxy) -> dict[str, Any] | None:
    options = message.options.get(OPTION)
    return options if isinstance(options, dict) else None


def _queue(queue_name: str | None) -> str:
    """The job queue without the namespace prefix (``<namespace>.<queue>``), a bounded label."""
    name = q_name(queue_name or DEFAULT_QUEUE_LABEL)  # drop a delay queue's ``.DQ``
    return name.rsplit(".", 1)[-1]


def _lag_seconds(scheduled_for: Any, started_wall: float) -> float | None:
    if not isinstance(scheduled_for, str):
        return None
    try:
        when = datetime.fromisoformat(scheduled_for)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, started_wall - when.timestamp())
