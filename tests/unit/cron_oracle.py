"""A reference implementation of tickwork's schedule math for the property tests.

It shares no code with tickwork and does not use croniter: expressions come from the test's
generator in a structured form (:class:`CronExpr`, the text next to what it means), so the
reference never parses cron text. It expands each field itself, walks the matching wall-clock
times in order (date → hour → minute → second) and maps each to a UTC instant by solving
``instant + offset(instant) == wall`` against the zone's UTC offsets (found by scanning the
zone at UTC instants and bisecting each change to the second). The DST rule is the one
tickwork documents:

* a wall time with no solution (the spring-forward gap) fires at the first instant after the
  gap, so every such time in one gap collapses into one fire;
* a wall time with two solutions (the repeated autumn hour) fires at the earlier one only.

Day of month and day of week follow crontab(5), as tickwork documents: if both fields are
restricted a day matches when either matches; a field that starts with ``*`` (``*``, ``*/2``)
does not restrict, and then a day must match both. :data:`VIXIE_STAR_RULE` off gives the other
common reading (only a bare ``*`` is unrestricted), which tickwork does not follow.
"""

from __future__ import annotations

import calendar
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

#: True: a day field that starts with ``*`` (``*/2``) counts as unrestricted (crontab(5)).
VIXIE_STAR_RULE = True
#: How far before the start's wall reading the walk begins (more than a DST shift), so the
#: monotonicity check below also covers the wall times just before the start.
WALK_MARGIN = timedelta(minutes=70)
#: A schedule that has not matched for this long never will (leap days recur within 8 years).
GIVE_UP_AFTER = timedelta(days=366 * 9)
ONE_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()  #: names[i] is value ``lo + i`` (day of week: 0 is Sunday)


SECOND = FieldSpec("second", 0, 59)
MINUTE = FieldSpec("minute", 0, 59)
HOUR = FieldSpec("hour", 0, 23)
DOM = FieldSpec("day of month", 1, 31)
MONTH = FieldSpec(
    "month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
)
DOW = FieldSpec("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))  # 7 = Sunday
SPECS = (SECOND, MINUTE, HOUR, DOM, MONTH, DOW)


@dataclass(frozen=True)
class Part:
    """One comma-separated element: ``*`` (no start), ``*/n``, ``v``, ``a-b`` or ``a-b/n``."""

    start: int | None = None
    end: int | None = None
    step: int | None = None  #: None when not written (``*/1`` is not ``*``)

    def values(self, spec: FieldSpec) -> set[int]:
        if self.start is None:
            lo, hi = spec.lo, spec.hi
        else:
            lo, hi = self.start, self.start if self.end is None else self.end
        assert spec.lo <= lo <= hi <= spec.hi, (self, spec)
        return set(range(lo, hi + 1, self.step or 1))


@dataclass(frozen=True)
class Field:
    spec: FieldSpec
    parts: tuple[Part, ...]
    text: str
    values: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        values: set[int] = set()
        for part in self.parts:
            values |= part.values(self.spec)
        if self.spec is DOW:
            values = {v % 7 for v in values}
        object.__setattr__(self, "values", frozenset(values))

    @property
    def restricts(self) -> bool:
        """Whether this day field takes part in the day-of-month/day-of-week OR."""
        if VIXIE_STAR_RULE:
            return self.parts[0].start is not None
        return self.parts != (Part(),)


def star(spec: FieldSpec) -> Field:
    return Field(spec, (Part(),), "*")


def single(spec: FieldSpec, value: int) -> Field:
    return Field(spec, (Part(value),), str(value))


@dataclass(frozen=True)
class CronExpr:
    """An expression's text (what tickwork is given) and its six fields, seconds first."""

    text: str
    fields: tuple[Field, Field, Field, Field, Field, Field]

    @property
    def second(self) -> Field:
        return self.fields[0]

    @property
    def dom(self) -> Field:
        return self.fields[3]

    @property
    def dow(self) -> Field:
        return self.fields[5]

    def __repr__(self) -> str:
        def show(f: Field) -> str:
            full = set(range(7)) if f.spec is DOW else set(range(f.spec.lo, f.spec.hi + 1))
            return "*" if f.values == full else ",".join(map(str, sorted(f.values)))

        sets = " ".join(show(f) for f in self.fields)
        rule = "or" if self.dom.restricts and self.dow.restricts else "and"
        return f"CronExpr({self.text!r}, meaning {sets!r}, days: dom {rule} dow)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis shows a drawn value
        printer.text(repr(self))

    def day_matches(self, day: date) -> bool:
        if day.month not in self.fields[4].values:
            return False
        in_dom = day.day in self.dom.values
        in_dow = (day.weekday() + 1) % 7 in self.dow.values  # cron: 0 is Sunday
        if self.dom.restricts and self.dow.restricts:
            return in_dom or in_dow
        return in_dom and in_dow

    def matches(self, wall: datetime) -> bool:
        """Whether a wall-clock time matches all six fields."""
        return (
            wall.second in self.fields[0].values
            and wall.minute in self.fields[1].values
            and wall.hour in self.fields[2].values
            and self.day_matches(wall.date())
        )

    def can_fire(self) -> bool:
        """Whether some calendar day matches (a day-of-week that restricts always can)."""
        if (self.dom.restricts and self.dow.restricts) or not self.dom.restricts:
            return True
        return any(
            d <= (29 if m == 2 else calendar.monthrange(2001, m)[1])
            for m in self.fields[4].values
            for d in self.dom.values
        )

    def wall_times(self, lo: datetime) -> Iterator[datetime]:
        """Matching naive wall times at or after ``lo``, in increasing order."""
        seconds, minutes, hours = (sorted(f.values) for f in self.fields[:3])
        day = lo.date()
        give_up = day + GIVE_UP_AFTER
        while day <= give_up:
            if day.month not in self.fields[4].values:
                day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
                continue
            if self.day_matches(day):
                for h in hours:
                    if datetime.combine(day, time(h, 59, 59)) < lo:
                        continue
                    for m in minutes:
                        if datetime.combine(day, time(h, m, 59)) < lo:
                            continue
                        for s in seconds:
                            wall = datetime.combine(day, time(h, m, s))
                            if wall >= lo:
                                yield wall
                                give_up = day + GIVE_UP_AFTER
            day += timedelta(days=1)
        raise NeverFires(self.text)


class NeverFires(Exception):
    pass


MACROS = {
    "@yearly": (0, 0, 0, 1, 1, None),
    "@annually": (0, 0, 0, 1, 1, None),
    "@monthly": (0, 0, 0, 1, None, None),
    "@weekly": (0, 0, 0, None, None, 0),
    "@daily": (0, 0, 0, None, None, None),
    "@midnight": (0, 0, 0, None, None, None),
    "@hourly": (0, 0, None, None, None, None),
    "@minutely": (0, None, None, None, None, None),  # tickwork's own: every minute at second 0
}


def macro(text: str) -> CronExpr:
    values = MACROS[text.strip().lower()]
    pairs = zip(SPECS, values, strict=True)
    fields = tuple(star(spec) if value is None else single(spec, value) for spec, value in pairs)
    return CronExpr(text, fields)  # type: ignore[arg-type]


# --- the zone's clock --------------------------------------------------------------------------


def _offset(zone: ZoneInfo, utc: datetime) -> timedelta:
    """The UTC offset in force at a naive UTC instant."""
    offset = utc.replace(tzinfo=UTC).astimezone(zone).utcoffset()
    assert offset is not None
    return offset


@dataclass(frozen=True)
class Change:
    at: datetime  #: naive UTC: the first instant with the new offset
    before: timedelta
    after: timedelta


def _changes(zone: ZoneInfo, start: datetime, end: datetime, step: timedelta) -> list[Change]:
    """Offset changes in [start, end] (naive UTC), by scanning and bisecting to the second."""
    found = []
    t, offset = start, _offset(zone, start)
    while t < end:
        nxt = min(t + step, end)
        new = _offset(zone, nxt)
        if new != offset:
            lo, hi = t, nxt  # old offset at lo, new at hi
            while hi - lo > ONE_SECOND:
                mid = lo + timedelta(seconds=(hi - lo) // ONE_SECOND // 2)
                if _offset(zone, mid) == offset:
                    lo = mid
                else:
                    hi = mid
            assert _offset(zone, hi - ONE_SECOND) == offset and _offset(zone, hi) == new
            found.append(Change(hi, offset, new))
            offset = new
        t = nxt
    return found


@functools.cache
def transitions(zone: str, first_year: int = 2024, last_year: int = 2031) -> tuple[Change, ...]:
    """The zone's offset changes from ``first_year`` to ``last_year`` inclusive."""
    start, end = datetime(first_year, 1, 1), datetime(last_year + 1, 1, 1)
    return tuple(_changes(ZoneInfo(zone), start, end, timedelta(hours=3)))


@functools.lru_cache(maxsize=8192)
def _segments(zone: str, day: date) -> tuple[tuple[datetime, datetime, timedelta], ...]:
    """(start, end, offset) runs of constant offset covering every instant whose wall reading
    can fall on ``day`` (offsets lie within -12 h … +14 h)."""
    start = datetime.combine(day, time()) - timedelta(hours=16)
    end = start + timedelta(hours=16 + 24 + 16)
    runs = []
    run_start, offset = start, _offset(ZoneInfo(zone), start)
    for change in _changes(ZoneInfo(zone), start, end, timedelta(hours=1)):
        runs.append((run_start, change.at, offset))
        run_start, offset = change.at, change.after
    runs.append((run_start, end, offset))
    return tuple(runs)


def wall_to_instant(zone: str, wall: datetime) -> tuple[datetime, str]:
    """A naive wall time's fire instant (aware UTC) and its kind: exists, ambiguous or gap."""
    runs = _segments(zone, wall.date())
    solutions = [wall - off for lo, hi, off in runs if lo <= wall - off < hi]
    if solutions:
        kind = "exists" if len(solutions) == 1 else "ambiguous"
        return min(solutions).replace(tzinfo=UTC), kind
    for (_, _, before), (at, _, after) in itertools.pairwise(runs):
        if before < after and at + before <= wall < at + after:
            return at.replace(tzinfo=UTC), "gap"
    raise AssertionError(f"{wall} in {zone}: no solution and in no gap")


def fires_with_kinds(expr: CronExpr, zone: str, after: datetime, count: int) -> list[tuple[datetime, str]]:
    """The first ``count`` fire instants strictly after ``after`` and each one's kind."""
    after = after.astimezone(UTC)
    reading = after.astimezone(ZoneInfo(zone)).replace(tzinfo=None, microsecond=0)
    out: list[tuple[datetime, str]] = []
    previous = None
    for wall in expr.wall_times(reading - WALK_MARGIN):
        instant, kind = wall_to_instant(zone, wall)
        # The rule maps later wall times to later-or-equal instants; the dedupe relies on it.
        assert previous is None or instant >= previous, (wall, instant, previous)
        previous = instant
        if instant > after and (not out or instant > out[-1][0]):
            out.append((instant, kind))
            if len(out) == count:
                break
    return out


def fires(expr: CronExpr, zone: str, after: datetime, count: int) -> list[datetime]:
    return [instant for instant, _ in fires_with_kinds(expr, zone, after, count)]


def is_gap_end(zone: str, instant: datetime) -> bool:
    """Whether ``instant`` is the first instant after a spring-forward gap."""
    naive = instant.astimezone(UTC).replace(tzinfo=None)
    hour = timedelta(hours=1)
    changes = _changes(ZoneInfo(zone), naive - hour, naive + hour, hour)
    return any(c.at == naive and c.before < c.after for c in changes)
