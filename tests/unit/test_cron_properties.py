"""Property tests: tickwork's schedule math against an independent reference.

The reference (``cron_oracle``) shares no code with tickwork and does not use croniter: the
generator below builds each expression's text together with its structure, the reference
expands that structure, walks the matching wall-clock times and maps them to UTC under
tickwork's documented DST rule. Every generated example is compared with it, DST
transitions included; start instants are biased to just before (and into) real transitions,
and hours, minutes and months to the ones the zone's transitions touch.

APScheduler's CronTrigger is a second, independent check, on the part of each example's
window that is at least 3 hours away from any transition: APScheduler 3 is wrong across a
transition (it fires a repeated hour twice, shifts a nonexistent time, and keeps its start's
offset for fires past a transition).

``test_found_disagreements`` pins the smallest disagreements between tickwork and the reference
that the properties found, one case each. Hypothesis's explain phase is off: it re-runs a
failure hundreds of times and would add half a minute to a failing run.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from hypothesis import HealthCheck, Phase, assume, event, given, note, settings
from hypothesis import strategies as st

from tests.unit import cron_oracle as ref
from tests.unit.cron_oracle import DOM, DOW, HOUR, MINUTE, MONTH, SECOND, CronExpr, Field, FieldSpec, Part
from tickwork.errors import ScheduleError
from tickwork.scheduler import CronSchedule

pytestmark = pytest.mark.unit

ZONES = [
    "UTC",
    "Asia/Kolkata",  # +05:30, no DST
    "America/Sao_Paulo",  # no DST since 2019
    "Europe/Berlin",
    "Europe/London",
    "Europe/Dublin",  # negative DST in the tz database
    "America/New_York",
    "America/St_Johns",  # -03:30 / -02:30
    "America/Santiago",  # changes at midnight: 00:00-00:59 does not exist
    "America/Havana",  # changes at midnight
    "Africa/Cairo",  # changes at midnight; falls back at 24:00
    "Australia/Sydney",
    "Australia/Lord_Howe",  # 30-minute DST
    "Pacific/Chatham",  # +12:45 / +13:45, changes at 02:45
]
FIRES = 8
#: APScheduler is compared only this far from a transition.
APS_MARGIN = timedelta(hours=3)
SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)


# --- generated expressions ---------------------------------------------------------------------


def edges(zone: str) -> list[ref.Change]:
    return [c for c in ref.transitions(zone) if 2025 <= c.at.year <= 2028]


def hot(zone: str) -> tuple[list[int], list[int], list[int]]:
    """Hours, minutes and months of the wall times the zone's transitions skip or repeat."""
    hours, minutes, months = set(), set(), set()
    for change in edges(zone):
        a, b = sorted((change.at + change.before, change.at + change.after))
        for wall in (a, b - ref.ONE_SECOND, b):
            hours.add(wall.hour)
            minutes.add(wall.minute)
            months.add(wall.month)
    return sorted(hours), sorted(minutes), sorted(months)


@st.composite
def spelled(draw: st.DrawFn, spec: FieldSpec, value: int) -> str:
    """A value as a number, a zero-padded number, or a name in any case."""
    styles = ["number", "number"]
    if value < 10:
        styles.append("padded")
    if spec.names and value - spec.lo < len(spec.names):
        styles += ["name", "name"]
    style = draw(st.sampled_from(styles))
    if style == "padded":
        return f"{value:02d}"
    if style == "name":
        name = spec.names[value - spec.lo]
        return draw(st.sampled_from([name, name.upper(), name.title()]))
    return str(value)


@st.composite
def parts(draw: st.DrawFn, spec: FieldSpec, hot_values: Sequence[int]) -> tuple[Part, str]:
    """One list element: ``v``, ``a-b``, ``a-b/n`` or ``*/n``; often around a hot value."""
    kind = draw(st.sampled_from(["value", "range", "range", "range-step", "range-step", "star-step"]))
    pivot = draw(st.sampled_from(hot_values) if hot_values else st.integers(spec.lo, spec.hi))
    if kind == "star-step":
        step = draw(st.integers(1, spec.hi - spec.lo + 2))
        return Part(step=step), f"*/{step}"
    if kind == "value":
        return Part(pivot), draw(spelled(spec, pivot))
    start = draw(st.integers(spec.lo, pivot))
    end = draw(st.integers(pivot, spec.hi))
    text = f"{draw(spelled(spec, start))}-{draw(spelled(spec, end))}"
    if kind == "range":
        return Part(start, end), text
    step = draw(st.integers(1, max(1, spec.hi - spec.lo)))
    return Part(start, end, step), f"{text}/{step}"


@st.composite
def fields(draw: st.DrawFn, spec: FieldSpec, star_percent: int, hot_values: Sequence[int] = ()) -> Field:
    if draw(st.integers(0, 99)) < star_percent:
        return ref.star(spec)
    items = draw(st.lists(parts(spec, hot_values), min_size=1, max_size=3))
    return Field(spec, tuple(p for p, _ in items), ",".join(text for _, text in items))


@st.composite
def expressions(draw: st.DrawFn, zone: str) -> CronExpr:
    """6-field (seconds first), 5-field and macro expressions, with their structure."""
    form = draw(st.sampled_from(["6 fields", "6 fields", "5 fields", "macro"]))
    event(f"form: {form}")
    if form == "macro":
        name = draw(st.sampled_from(sorted(ref.MACROS)))
        return ref.macro(draw(st.sampled_from([name, name.upper()])))
    hours, minutes, months = hot(zone)
    second = draw(fields(SECOND, 30)) if form == "6 fields" else ref.single(SECOND, 0)
    minute = draw(fields(MINUTE, 25, minutes))
    hour = draw(fields(HOUR, 20, hours))
    dom = draw(fields(DOM, 55))
    month = draw(fields(MONTH, 70, months))
    dow = draw(fields(DOW, 55))
    texts = [f.text for f in (minute, hour, dom, month, dow)]
    if form == "6 fields":
        texts.insert(0, second.text)
    gap = draw(st.sampled_from([" ", " ", " ", "  ", "\t"]))
    text = gap.join(texts)
    if draw(st.integers(0, 9)) == 0:
        text = f" {text} "
    if dom.restricts and dow.restricts:
        event("day of month and day of week both restricted")
    return CronExpr(text, (second, minute, hour, dom, month, dow))


@st.composite
def starts(draw: st.DrawFn, zone: str) -> datetime:
    """Mostly a little before (or up to 2 h after) one of the zone's transitions."""
    changes = edges(zone)
    if changes and draw(st.integers(0, 9)) < 7:
        at = draw(st.sampled_from(changes)).at.replace(tzinfo=UTC)
        reach = draw(st.sampled_from([2 * 3600, 2 * 3600, 26 * 3600, 6 * 86400]))
        start = at - timedelta(seconds=draw(st.integers(-2 * 3600, reach)))
        return start + timedelta(microseconds=draw(st.sampled_from([0, 0, 0, 1, 999_999])))
    return draw(
        st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC))
    )


def draw_case(data: st.DataObject) -> tuple[str, CronExpr, datetime]:
    zone = data.draw(st.sampled_from(ZONES), label="zone")
    expr = data.draw(expressions(zone), label="expression")
    start = data.draw(starts(zone), label="start")
    note(f"CronSchedule({expr.text!r}, {zone!r}).next_fires({start!r}, {FIRES})")
    return zone, expr, start


def local(instants: list[datetime], zone: str) -> list[str]:
    return [f"{i:%Y-%m-%d %H:%M:%S}Z={i.astimezone(ZoneInfo(zone)):%a %H:%M:%S%z}" for i in instants]


# --- APScheduler -------------------------------------------------------------------------------


def aps_values(f: Field) -> str:
    full = set(range(7)) if f.spec is DOW else set(range(f.spec.lo, f.spec.hi + 1))
    if f.values == full:
        return "*"
    if f.spec is DOW:
        return ",".join(DOW.names[v] for v in sorted(f.values))
    return ",".join(map(str, sorted(f.values)))


def aps_trigger(expr: CronExpr, zone: str) -> CronTrigger | OrTrigger:
    """The same schedule for APScheduler, from the reference's reading of the expression."""
    second, minute, hour, dom, month, dow = (aps_values(f) for f in expr.fields)
    common = {"second": second, "minute": minute, "hour": hour, "month": month, "timezone": zone}
    if expr.dom.restricts and expr.dow.restricts:  # cron ORs them, APScheduler ANDs
        return OrTrigger(
            [CronTrigger(day=dom, day_of_week="*", **common), CronTrigger(day="*", day_of_week=dow, **common)]
        )
    return CronTrigger(day=dom, day_of_week=dow, **common)


def aps_fires(expr: CronExpr, zone: str, start: datetime, until: datetime) -> list[datetime]:
    trigger = aps_trigger(expr, zone)
    found: list[datetime] = []
    previous, now = None, start + timedelta(microseconds=1)
    while True:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None or fire > until:
            return found
        assert not found or fire > found[-1]
        found.append(fire.astimezone(UTC))
        previous, now = fire, fire + timedelta(microseconds=1)


def quiet_stretches(zone: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The parts of (start, end] at least :data:`APS_MARGIN` away from the zone's transitions."""
    table = [c.at.replace(tzinfo=UTC) for c in ref.transitions(zone)]
    if table and end > datetime(2031, 12, 31, tzinfo=UTC):
        end = datetime(2031, 12, 31, tzinfo=UTC)  # transitions() looks no further
    stretches, lo = [], start
    for at in table:
        if at + APS_MARGIN < lo:
            continue
        if at - APS_MARGIN > end:
            break
        if at - APS_MARGIN > lo:
            stretches.append((lo, at - APS_MARGIN))
        lo = max(lo, at + APS_MARGIN)
    if lo < end:
        stretches.append((lo, end))
    return stretches


# --- properties --------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_fires_match_the_reference_and_apscheduler(data: st.DataObject) -> None:
    zone, expr, start = draw_case(data)
    if not expr.can_fire():
        event("no day matches: rejected")
        with pytest.raises(ScheduleError, match="never fires"):
            CronSchedule(expr.text, zone)
        return
    expected = ref.fires_with_kinds(expr, zone, start, FIRES)
    want = [instant for instant, _ in expected]
    ours = CronSchedule(expr.text, zone).next_fires(start, FIRES)
    note(f"tickwork:  {local(ours, zone)}")
    note(f"reference: {local(want, zone)}")
    for kind in sorted({kind for _, kind in expected} - {"exists"}):
        event(f"reference fires include a wall time that is: {kind}")
    assert ours == want, (expr.text, zone, start)

    # APScheduler on the stretches away from transitions; ours holds every fire up to ours[-1].
    compared = 0
    for lo, hi in quiet_stretches(zone, start, ours[-1]):
        theirs = aps_fires(expr, zone, lo, hi)
        assert theirs == [fire for fire in ours if lo < fire <= hi], (expr.text, zone, lo, hi)
        compared += len(theirs)
    share = "all" if compared == FIRES else "some" if compared else "none"
    event(f"APScheduler: compared {share} of the fires")


@SETTINGS
@given(data=st.data())
def test_fires_increase_match_their_fields_and_are_first_occurrences(data: st.DataObject) -> None:
    zone, expr, start = draw_case(data)
    assume(expr.can_fire())
    tz = ZoneInfo(zone)
    schedule = CronSchedule(expr.text, zone)
    ours = schedule.next_fires(start, FIRES)
    note(f"tickwork: {local(ours, zone)}")
    assert len(ours) == FIRES
    assert all(a < b for a, b in zip([start, *ours], ours, strict=False))
    for fire in ours:
        wall = fire.astimezone(tz).replace(tzinfo=None)
        # The fields match the wall clock (the reference's matcher), except where a gap collapsed.
        if not expr.matches(wall):
            assert ref.is_gap_end(zone, fire), f"{fire} ({wall} local) does not match {expr.text!r}"
            event("a fire at the end of a gap")
        # Never the second pass of a repeated wall time.
        assert ref.wall_to_instant(zone, wall)[0] == fire, f"{fire} is the second pass of {wall}"
    # Asking again from any fire (what the scheduler does) or from just before it agrees.
    assert schedule.next_fire(start) == ours[0]
    for a, b in itertools.pairwise(ours):
        assert schedule.next_fire(a) == b
        assert schedule.next_fire(b - timedelta(microseconds=1)) == b


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def six(text: str, *fields: Field | int | None) -> CronExpr:
    """A hand-written expression: each field a Field, a single value, or None for ``*``."""
    built = [
        f if isinstance(f, Field) else ref.star(spec) if f is None else ref.single(spec, f)
        for spec, f in zip(ref.SPECS, fields, strict=True)
    ]
    return CronExpr(text, tuple(built))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("expr", "zone", "start", "local_fires"),
    [
        # Berlin: 02:00 CET -> 03:00 CEST on 2026-03-29; 02:00-02:59 CEST repeat on 2026-10-25.
        (
            six("0 30 2 * * *", 0, 30, 2, None, None, None),
            "Europe/Berlin",
            utc(2026, 3, 28, 12),
            ["03:00:00+0200", "02:30:00+0200"],
        ),
        (
            six("0 30 2 * * *", 0, 30, 2, None, None, None),
            "Europe/Berlin",
            utc(2026, 10, 24, 12),
            ["02:30:00+0200", "02:30:00+0100"],
        ),
        (
            six("0 30 2 * * *", 0, 30, 2, None, None, None),
            "Europe/Berlin",
            utc(2026, 10, 25, 1, 10),
            ["02:30:00+0100"],
        ),
        (
            six("* * 2 * * *", Field(SECOND, (Part(),), "*"), None, 2, None, None, None),
            "Europe/Berlin",
            utc(2026, 3, 29, 0, 59, 59),
            ["03:00:00+0200", "02:00:00+0200", "02:00:01+0200"],
        ),
        # Lord Howe: 02:00 -> 02:30 on 2026-10-04; 01:30-01:59 repeat on 2026-04-05.
        (
            six("0 15 2 * * *", 0, 15, 2, None, None, None),
            "Australia/Lord_Howe",
            utc(2026, 10, 3),
            ["02:30:00+1100", "02:15:00+1100"],
        ),
        (
            six("0 45 1 * * *", 0, 45, 1, None, None, None),
            "Australia/Lord_Howe",
            utc(2026, 4, 4),
            ["01:45:00+1100", "01:45:00+1030"],
        ),
        # Santiago: 2026-09-06 00:00 -> 01:00 (midnight does not exist).
        (
            six("@daily", 0, 0, 0, None, None, None),
            "America/Santiago",
            utc(2026, 9, 5, 12),
            ["01:00:00-0300", "00:00:00-0300"],
        ),
    ],
)
def test_the_reference_follows_the_documented_dst_rule(
    expr: CronExpr, zone: str, start: datetime, local_fires: list[str]
) -> None:
    got = ref.fires(expr, zone, start, len(local_fires))
    assert [f"{f.astimezone(ZoneInfo(zone)):%H:%M:%S%z}" for f in got] == local_fires
    assert [f.day for f in got] == sorted(f.day for f in got)


def dow_field(text: str, *parts: Part) -> Field:
    return Field(DOW, parts, text)


def dom_field(text: str, *parts: Part) -> Field:
    return Field(DOM, parts, text)


#: Minimal disagreements the properties above found (see the module docstring of cron_oracle for
#: the day rule); each is reduced to UTC and a plain start, and is checked on its own here.
DISAGREEMENTS = [
    # A one-value range spelled two ways is read as the whole field: every minute, not :05.
    six("0 5-05 * * * *", 0, Field(MINUTE, (Part(5, 5),), "5-05"), None, None, None, None),
    six("0 0 0 * * mon-1", 0, 0, 0, None, None, dow_field("mon-1", Part(1, 1))),
    six("0 0 0 1 1-jan/2 *", 0, 0, 0, 1, Field(MONTH, (Part(1, 1, 2),), "1-jan/2"), None),
    # Day of month restricted and day of week restricted to every day: every day either way
    # (cron ORs them); tickwork fires only on the day-of-month days.
    six(
        "0 0 0 5,*/10 * 0-6",
        0,
        0,
        0,
        dom_field("5,*/10", Part(5), Part(step=10)),
        None,
        dow_field("0-6", Part(0, 6)),
    ),
    six(
        "0 0 0 1-31 * 1,*/3",
        0,
        0,
        0,
        dom_field("1-31", Part(1, 31)),
        None,
        dow_field("1,*/3", Part(1), Part(step=3)),
    ),
    # The same with a ``*/n`` day of month: every day under the rule above (both fields
    # restricted), odd days only in tickwork (and in Vixie cron, which would AND them).
    six("0 0 0 */2 * 0-6", 0, 0, 0, dom_field("*/2", Part(step=2)), None, dow_field("0-6", Part(0, 6))),
]


@pytest.mark.parametrize("expr", DISAGREEMENTS, ids=[e.text for e in DISAGREEMENTS])
def test_found_disagreements(expr: CronExpr) -> None:
    start = utc(2025, 3, 1)
    want = ref.fires(expr, "UTC", start, FIRES)
    ours = CronSchedule(expr.text, "UTC").next_fires(start, FIRES)
    assert local(ours, "UTC") == local(want, "UTC")


@settings(max_examples=100, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    hour=st.integers(0, 23),
    minute=st.sampled_from([0, 15, 30, 45]),
    data=st.data(),
)
def test_a_daily_job_fires_exactly_once_per_local_day(
    zone: str, hour: int, minute: int, data: st.DataObject
) -> None:
    start = data.draw(starts(zone))
    tz = ZoneInfo(zone)
    fires = CronSchedule(f"0 {minute} {hour} * * *", zone).next_fires(start, 10)
    days = [f.astimezone(tz).date() for f in fires]
    assert len(days) == len(set(days))
    first = days[0]
    assert days == [first + timedelta(days=i) for i in range(10)]
