"""Schedule math: examples, DST rules in several zones, and validation errors."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tickwork.errors import ScheduleError
from tickwork.scheduler import CronSchedule, next_fire_time, normalize_expression, parse_run_at

pytestmark = pytest.mark.unit


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_seed_expression_fires_on_each_whole_minute() -> None:
    fires = CronSchedule("0 */1 * * * *").next_fires(utc(2026, 1, 1, 12, 0, 30), 3)
    assert fires == [utc(2026, 1, 1, 12, 1), utc(2026, 1, 1, 12, 2), utc(2026, 1, 1, 12, 3)]


@pytest.mark.parametrize(
    ("expression", "normalized"),
    [
        ("0 */1 * * * *", "0 */1 * * * *"),
        ("*/5 * * * *", "0 */5 * * * *"),
        ("@hourly", "0 0 * * * *"),
        ("@DAILY", "0 0 0 * * *"),
        ("  15   10 * *  mon-fri ", "0 15 10 * * 1-5"),
    ],
)
def test_forms_normalize_to_six_fields_seconds_first(expression: str, normalized: str) -> None:
    assert normalize_expression(expression) == normalized


def test_five_field_form_fires_at_second_zero() -> None:
    assert CronSchedule("*/5 * * * *").next_fire(utc(2026, 5, 1, 10, 2, 7)) == utc(2026, 5, 1, 10, 5)


def test_seconds_field_is_first() -> None:
    assert CronSchedule("30 * * * * *").next_fire(utc(2026, 5, 1, 10, 2, 7)) == utc(2026, 5, 1, 10, 2, 30)


def test_time_zone_shifts_fire_instants() -> None:
    fire = CronSchedule("0 0 9 * * *", "Asia/Kolkata").next_fire(utc(2026, 5, 1))
    assert fire == utc(2026, 5, 1, 3, 30)


@pytest.mark.parametrize(
    ("expression", "needle"),
    [
        ("* * *", "expected 5 fields"),
        ("* * * * * * *", "got 7"),
        ("0 61 * * * *", "minute field '61'"),
        ("0 0 25 * * *", "hour field '25'"),
        ("0 0 0 32 * *", "day of month field '32'"),
        ("0 0 0 * 13 *", "month field '13'"),
        ("0 0 0 * * 8", "day of week field '8'"),
        ("61 * * * * *", "second field '61'"),
        ("@fortnightly", "unknown macro"),
        ("0 0 30 2 *", "never fires"),
        ("", "non-empty"),
        ("x" * 300, "longer than"),
    ],
)
def test_invalid_expressions_name_the_field_and_reason(expression: str, needle: str) -> None:
    with pytest.raises(ScheduleError) as info:
        CronSchedule(expression)
    assert info.value.field == "cronExpression"
    assert needle in info.value.reason


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "Europe/Berlinn"])
def test_unknown_time_zone_is_rejected(zone: str) -> None:
    with pytest.raises(ScheduleError) as info:
        CronSchedule("@hourly", zone)
    assert info.value.field == "timezone"


def local(fires: list[datetime], zone: str) -> list[str]:
    return [f.astimezone(ZoneInfo(zone)).isoformat() for f in fires]


# Daily 02:30 across both transitions, in zones of both hemispheres.
# (zone, spring-forward day start, fall-back day start): each day fires once.
DST_CASES = [
    ("Europe/Berlin", utc(2026, 3, 28), utc(2026, 10, 24)),
    ("America/New_York", utc(2026, 3, 7, 12), utc(2026, 10, 31, 12)),
    ("Australia/Sydney", utc(2026, 10, 3), utc(2026, 4, 4)),
    ("Europe/London", utc(2026, 3, 28), utc(2026, 10, 24)),
]


@pytest.mark.parametrize(("zone", "spring", "autumn"), DST_CASES)
def test_daily_job_fires_once_a_day_across_both_transitions(
    zone: str, spring: datetime, autumn: datetime
) -> None:
    tz = ZoneInfo(zone)
    hour = 1 if zone == "Europe/London" else 2  # London's gap and repeat are 01:00-02:00
    schedule = CronSchedule(f"0 30 {hour} * * *", zone)
    for start in (spring, autumn):
        fires = schedule.next_fires(start, 4)
        days = [f.astimezone(tz).date() for f in fires]
        assert days == sorted(set(days)), f"two fires on one day: {local(fires, zone)}"
        assert all(b - a <= timedelta(days=1, hours=1) for a, b in itertools.pairwise(fires))


def test_nonexistent_time_fires_at_the_first_instant_after_the_gap() -> None:
    # 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 does not exist.
    fires = CronSchedule("0 30 2 * * *", "Europe/Berlin").next_fires(utc(2026, 3, 28, 12), 2)
    assert fires == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]


def test_every_minute_in_the_gap_collapses_to_one_fire() -> None:
    fires = CronSchedule("0 * 2 * * *", "Europe/Berlin").next_fires(utc(2026, 3, 29, 0, 30), 3)
    # 02:00..02:59 do not exist: one fire at 03:00 CEST, then 02:00 CEST the next day.
    assert fires == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0), utc(2026, 3, 30, 0, 1)]


def test_ambiguous_time_fires_once_at_its_first_occurrence() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    fires = CronSchedule("0 30 2 * * *", "Europe/Berlin").next_fires(utc(2026, 10, 24, 12), 2)
    assert fires == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_starting_inside_the_repeated_hour_does_not_fire_its_first_pass_again() -> None:
    # At 01:10 UTC it is 02:10 CET (second pass). 02:30 already fired at 00:30 UTC.
    fire = CronSchedule("0 30 2 * * *", "Europe/Berlin").next_fire(utc(2026, 10, 25, 1, 10))
    assert fire == utc(2026, 10, 26, 1, 30)


def test_half_hour_dst_zone() -> None:
    # Lord Howe shifts by 30 minutes: 02:00 -> 02:30 on 2026-10-04.
    fires = CronSchedule("0 15 2 * * *", "Australia/Lord_Howe").next_fires(utc(2026, 10, 3), 2)
    assert local(fires, "Australia/Lord_Howe") == [
        "2026-10-04T02:30:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]


def test_one_time_and_next_fire_time() -> None:
    at = parse_run_at("2026-06-01T10:00:00+02:00")
    assert at == utc(2026, 6, 1, 8)
    assert parse_run_at("2026-06-01T08:00:00") == at  # naive is UTC
    assert next_fire_time(None, "UTC", at, utc(2026, 1, 1)) == at
    assert next_fire_time(None, "UTC", at, utc(2026, 7, 1)) is None
    assert next_fire_time(None, "UTC", None, utc(2026, 7, 1)) is None
    with pytest.raises(ScheduleError, match="ISO 8601"):
        parse_run_at("tomorrow-ish")


def test_a_one_value_range_is_that_value_not_the_whole_field() -> None:
    # croniter reads "5-5" as "*"; tickwork normalizes it to "5".
    assert normalize_expression("5-5 * * * *") == "0 5 * * * *"
    assert normalize_expression("0 1-1,3-3/2 * * * *") == "0 1,3 * * * *"
    fire = CronSchedule("5-5 * * * *").next_fire(utc(2026, 1, 1, 12, 0))
    assert fire == utc(2026, 1, 1, 12, 5)
