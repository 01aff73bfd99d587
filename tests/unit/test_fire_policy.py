"""Misfire and overlap policies as pure functions (no services)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tickwork.scheduler.policy import MAX_ON_TIME, MAX_RECORDED_LATE, PlannedFire, apply_overlap, plan_fires
from tickwork.store.models import RunStatus

pytestmark = pytest.mark.unit

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def plan(
    policy: str = "fire_once",
    *,
    cron: str | None = "* * * * * *",
    run_at: datetime | None = None,
    first: datetime = T0,
    now: datetime,
    grace: float = 60,
    limit: int = 100,
):  # type: ignore[no-untyped-def]
    return plan_fires(
        cron_expression=cron,
        timezone="UTC",
        run_at=run_at,
        next_fire_at=first,
        now=now,
        misfire_policy=policy,
        grace_seconds=grace,
        fire_all_limit=limit,
    )


def test_on_time_fires_all_run_and_schedule_continues() -> None:
    p = plan(now=T0 + timedelta(seconds=2.5))
    assert [f.scheduled_for for f in p.fires] == [T0 + timedelta(seconds=s) for s in (0, 1, 2)]
    assert all(f.runs and f.trigger == "schedule" for f in p.fires)
    assert p.next_fire_at == T0 + timedelta(seconds=3)
    assert p.last_fire_at == T0 + timedelta(seconds=2)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("fire_once", {"PENDING": 1, "MISSED": 9}), ("fire_all", {"PENDING": 10}), ("skip", {"SKIPPED": 10})],
)
def test_late_fires_follow_the_policy(policy: str, expected: dict[str, int]) -> None:
    p = plan(policy, cron="0 * * * * *", now=T0 + timedelta(minutes=9, seconds=30), grace=5)
    assert Counter(f.status.value for f in p.fires) == expected
    assert p.next_fire_at == T0 + timedelta(minutes=10)


def test_fire_all_is_bounded() -> None:
    p = plan("fire_all", cron="0 * * * * *", now=T0 + timedelta(minutes=9, seconds=30), grace=5, limit=4)
    running = [f.scheduled_for for f in p.fires if f.runs]
    assert running == [T0 + timedelta(minutes=m) for m in range(4)]  # oldest first


def test_long_outage_records_a_bounded_number_of_rows_and_jumps() -> None:
    now = T0 + timedelta(days=1)
    p = plan("fire_once", now=now, grace=10)
    late = [f for f in p.fires if f.trigger == "misfire"]
    assert len(late) == MAX_RECORDED_LATE
    assert "not recorded one by one" in (late[-1].error or "")
    on_time = [f for f in p.fires if f.trigger == "schedule"]
    assert len(on_time) == 11 and all(f.runs for f in on_time)  # now-10 s … now
    assert p.next_fire_at == now + timedelta(seconds=1)


def test_on_time_fires_per_tick_are_bounded_and_the_rest_follow() -> None:
    now = T0 + timedelta(hours=4)  # a 5 h grace: every per-second fire since T0 is on time
    p = plan("fire_once", now=now, grace=5 * 3600)
    assert [f.scheduled_for for f in p.fires] == [T0 + timedelta(seconds=s) for s in range(MAX_ON_TIME)]
    assert p.next_fire_at == T0 + timedelta(seconds=MAX_ON_TIME)  # the next tick goes on from here


def test_one_time_job() -> None:
    at = T0 + timedelta(seconds=5)
    assert [f.runs for f in plan(cron=None, run_at=at, first=at, now=at + timedelta(seconds=1)).fires] == [
        True
    ]
    late = plan("skip", cron=None, run_at=at, first=at, now=at + timedelta(hours=1)).fires
    assert [f.status for f in late] == [RunStatus.SKIPPED]
    late = plan("fire_once", cron=None, run_at=at, first=at, now=at + timedelta(hours=1))
    assert [f.trigger.value for f in late.fires] == ["misfire"] and late.next_fire_at is None


def test_overlap() -> None:
    fires = [PlannedFire(T0), PlannedFire(T0 + timedelta(seconds=1))]
    assert [f.runs for f in apply_overlap(fires, "allow", active=True)] == [True, True]
    assert [f.runs for f in apply_overlap(fires, "forbid", active=False)] == [True, False]
    assert [f.runs for f in apply_overlap(fires, "forbid", active=True)] == [False, False]
    assert [f.runs for f in apply_overlap(fires, "replace", active=True)] == [False, True]
