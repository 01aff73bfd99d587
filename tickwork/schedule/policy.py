"""Which fires a due job makes: misfire and overlap policies, as pure functions.

A fire is *late* when it is older than the job's misfire grace at the moment the ticker handles
it (``scheduled_for < now - grace``); a fire within the grace is *on time* and is always made.
Late fires are what a scheduler outage (or a long pause) leaves behind, and the job's misfire
policy decides them:

``fire_once`` (default)
    If on-time fires exist, they run and every late fire is recorded ``MISSED``. Otherwise the
    oldest late fire runs once as the catch-up (trigger ``misfire``) and the rest are ``MISSED``.
``fire_all``
    Late fires run, oldest first, up to ``fire_all_limit`` (trigger ``misfire``); any beyond the
    limit are ``MISSED``.
``skip``
    Late fires are recorded ``SKIPPED``; none runs.

At most :data:`MAX_RECORDED_LATE` late fires are written per job and tick; when an outage left
more, the last recorded row says so, and the next fire time jumps past them.

A one-time job (``run_at``) has a single fire: on time or late, it follows the same rules (skip
records it ``SKIPPED``, the two others run it).

Overlap (applied by the store, which knows whether a run is active): ``forbid`` records a fire
``SKIPPED`` while a ``PENDING``/``RUNNING`` run of the job exists, and only the first of several
fires made in one tick runs; ``replace`` supersedes unclaimed ``PENDING`` runs (recorded
``SKIPPED``) and keeps the newest fire; ``allow`` runs all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache

from tickwork.schedule.cron import CronSchedule
from tickwork.vocabulary import MisfirePolicy, OverlapPolicy, RunStatus, RunTrigger

#: Late fires written as rows per job and tick (a day-long outage of a per-second job is 86,400).
MAX_RECORDED_LATE = 1000
#: On-time fires made per job and tick (a huge grace on a per-second job); the rest next tick.
MAX_ON_TIME = 10_000
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class PlannedFire:
    """One fire instant of a job and what becomes of it."""

    scheduled_for: datetime
    status: RunStatus = RunStatus.PENDING
    trigger: RunTrigger = RunTrigger.SCHEDULE
    error: str | None = None

    @property
    def runs(self) -> bool:
        return self.status == RunStatus.PENDING


@dataclass(frozen=True)
class FirePlan:
    """The fires of one due job, and where its schedule continues."""

    fires: list[PlannedFire]
    next_fire_at: datetime | None

    @property
    def last_fire_at(self) -> datetime | None:
        made = [f.scheduled_for for f in self.fires if f.runs]
        return max(made) if made else None


@lru_cache(maxsize=4096)
def cron_schedule(expression: str, timezone: str) -> CronSchedule:
    """Parsed schedules are cached: validating an expression costs far more than using it."""
    return CronSchedule(expression, timezone)


@lru_cache(maxsize=65536)
def _next_after(expression: str, timezone: str, after: datetime) -> datetime:
    # Many jobs share an expression and a fire time (``* * * * * *``), so this is cached too.
    return cron_schedule(expression, timezone).next_fire(after)


def _fires_from(expression: str, timezone: str, first: datetime) -> Iterator[datetime]:
    current = first
    while True:
        yield current
        current = _next_after(expression, timezone, current)


def plan_fires(
    *,
    cron_expression: str | None,
    timezone: str,
    run_at: datetime | None,
    next_fire_at: datetime,
    now: datetime,
    misfire_policy: str,
    grace_seconds: float,
    fire_all_limit: int,
) -> FirePlan:
    """The fires a job due at ``next_fire_at`` (``<= now``) makes at ``now``, per misfire policy."""
    cutoff = now - timedelta(seconds=grace_seconds)
    policy = MisfirePolicy(misfire_policy)
    if not cron_expression:
        if run_at is None:  # on-demand job: nothing to fire on a schedule
            return FirePlan([], None)
        if next_fire_at >= cutoff:
            return FirePlan([PlannedFire(next_fire_at)], None)
        late = _late_fires(
            [next_fire_at], [], policy=policy, fire_all_limit=fire_all_limit, cutoff=cutoff, overflow=False
        )
        return FirePlan(late, None)

    late_times: list[datetime] = []
    on_time: list[datetime] = []
    overflow = False
    it = _fires_from(cron_expression, timezone, next_fire_at)
    instant = next(it)
    while instant < cutoff:
        if len(late_times) >= MAX_RECORDED_LATE:
            # Jump over the unrecorded rest of the outage to the first fire within the grace.
            overflow = True
            it = _fires_from(
                cron_expression, timezone, _next_after(cron_expression, timezone, cutoff - _ONE_US)
            )
            instant = next(it)
            break
        late_times.append(instant)
        instant = next(it)
    while instant <= now and len(on_time) < MAX_ON_TIME:
        on_time.append(instant)
        instant = next(it)
    late = _late_fires(
        late_times, on_time, policy=policy, fire_all_limit=fire_all_limit, cutoff=cutoff, overflow=overflow
    )
    return FirePlan([*late, *(PlannedFire(t) for t in on_time)], instant)


def _late_fires(
    late_times: list[datetime],
    on_time: list[datetime],
    *,
    policy: MisfirePolicy,
    fire_all_limit: int,
    cutoff: datetime,
    overflow: bool,
) -> list[PlannedFire]:
    if not late_times:
        return []
    fires: list[PlannedFire] = []
    for index, instant in enumerate(late_times):
        if policy == MisfirePolicy.SKIP:
            fire = PlannedFire(instant, RunStatus.SKIPPED, RunTrigger.MISFIRE, "misfire policy skip")
        elif (policy == MisfirePolicy.FIRE_ALL and index < fire_all_limit) or (
            policy == MisfirePolicy.FIRE_ONCE and index == 0 and not on_time
        ):
            fire = PlannedFire(instant, RunStatus.PENDING, RunTrigger.MISFIRE)
        else:
            reason = (
                f"missed: fire_all_limit {fire_all_limit} reached"
                if policy == MisfirePolicy.FIRE_ALL
                else "missed: coalesced by misfire policy fire_once"
            )
            fire = PlannedFire(instant, RunStatus.MISSED, RunTrigger.MISFIRE, reason)
        fires.append(fire)
    if overflow:
        last = fires[-1]
        note = f"; more fires until {cutoff.isoformat()} were missed and not recorded one by one"
        fires[-1] = replace(last, error=(last.error or "") + note)
    return fires


def apply_overlap(fires: list[PlannedFire], policy: str, *, active: bool) -> list[PlannedFire]:
    """Overlap policy on one job's fires of a tick; ``active``: a run of it is PENDING/RUNNING."""
    overlap = OverlapPolicy(policy)
    if overlap == OverlapPolicy.ALLOW:
        return fires
    running = [i for i, f in enumerate(fires) if f.runs]
    if not running:
        return fires
    if overlap == OverlapPolicy.FORBID:
        keep = None if active else running[0]
        reason = "overlap policy forbid: a run of this job is still active"
    else:
        keep = running[-1]
        reason = "overlap policy replace: superseded by a newer fire"
    out = list(fires)
    for i in running:
        if i != keep:
            out[i] = replace(out[i], status=RunStatus.SKIPPED, error=reason)
    return out
