"""Schedule math: cron expressions (6-field seconds-first, 5-field, macros) in a time zone.

Fire times are computed on the wall clock of the job's zone with croniter and then mapped
to UTC instants:

* a wall time that does not exist (the spring-forward gap) fires once, at the first instant
  after the gap;
* an ambiguous wall time (the repeated autumn hour) fires once, at its first occurrence.

So the fires of one schedule are strictly increasing instants, and a DST change never
doubles or drops a daily run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from tickwork.errors import ScheduleError

MACROS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
    "@minutely": "0 * * * * *",
}
FIELD_NAMES = ("second", "minute", "hour", "day of month", "month", "day of week")
MAX_EXPRESSION_LENGTH = 200
#: How far ahead a schedule must fire at least once to be accepted (``0 0 30 2 *`` never does).
MAX_YEARS_WITHOUT_FIRE = 8


def parse_timezone(name: str, field: str = "timezone") -> ZoneInfo:
    """An IANA zone, or a :class:`ScheduleError` naming ``field``."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ScheduleError(field, "must be an IANA time zone name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(field, f"unknown time zone {name!r}") from None


def normalize_expression(expression: str, field: str = "cronExpression") -> str:
    """The 6-field, seconds-first form of a 5-field, 6-field or macro expression."""
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError(field, "must be a non-empty cron expression")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ScheduleError(field, f"longer than {MAX_EXPRESSION_LENGTH} characters")
    text = " ".join(expression.split())
    if text.startswith("@"):
        macro = MACROS.get(text.lower())
        if macro is None:
            known = ", ".join(sorted(MACROS))
            raise ScheduleError(field, f"unknown macro {text!r} (known: {known})")
        return macro
    parts = text.split(" ")
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise ScheduleError(
            field,
            f"expected 5 fields (min hour dom mon dow) or 6 fields with seconds first "
            f"(sec min hour dom mon dow), got {len(parts)}",
        )
    parts = [_canonical_field(part, index) for index, part in enumerate(parts)]
    for index, part in enumerate(parts):
        probe = ["*"] * 6
        probe[index] = part
        if "H" in part.upper().replace("THU", "").replace("TH", ""):
            raise ScheduleError(
                field, f"{FIELD_NAMES[index]} field {part!r}: hashed 'H' values are not supported"
            )
        try:
            croniter.expand(" ".join(probe), second_at_beginning=True)
        except (CroniterError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise ScheduleError(field, f"{FIELD_NAMES[index]} field {part!r}: {_reason(exc)}") from None
    try:
        croniter.expand(" ".join(parts), second_at_beginning=True)
    except (CroniterError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise ScheduleError(field, _reason(exc)) from None
    return " ".join(_days(parts))


_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_RANGE_ITEM = re.compile(r"^(\w+)(?:-(\w+))?(/\d+)?$")


def _number(token: str, index: int) -> str:
    """A field value as a plain number: names (``JAN``, ``mon``) and zero padding removed."""
    lowered = token.lower()
    if index == 4 and lowered in _MONTH_NAMES:
        return str(_MONTH_NAMES.index(lowered) + 1)
    if index == 5 and lowered in _DAY_NAMES:
        return str(_DAY_NAMES.index(lowered))
    return str(int(token)) if token.isdigit() else token


def _canonical_field(part: str, index: int) -> str:
    """Each item spelled one way: numbers for names, no zero padding, ``a-a`` → ``a``.

    croniter reads a one-value range it does not recognise as one (``5-05``, ``mon-1``,
    ``1-jan/2``) as the whole field; written as its value it is read right.
    """
    items = []
    for item in part.split(","):
        match = _RANGE_ITEM.match(item)
        if match is None:
            items.append(item)  # *, */n, L, 5#3, ...: croniter's own
            continue
        start, end, step = match.group(1), match.group(2), match.group(3) or ""
        start = _number(start, index)
        if end is None:
            items.append(start + step)
            continue
        end = _number(end, index)
        items.append(start if start == end else f"{start}-{end}{step}")
    return ",".join(items)


def _unrestricted(day_field: str) -> bool:
    """Cron's rule (crontab(5)): a day field that starts with ``*`` does not restrict the day."""
    return day_field.startswith(("*", "?"))


def _whole_field(expression: str, index: int) -> bool:
    """Whether a field's values cover its whole range (croniter then treats it as ``*``)."""
    expanded = croniter.expand(expression, second_at_beginning=True)[0]
    # croniter's order: minute, hour, day of month, month, day of week, second.
    return bool(expanded[(5, 0, 1, 2, 3, 4)[index]] == ["*"])


def _days(parts: list[str]) -> list[str]:
    """Day of month and day of week as crontab(5) reads them, in a form croniter reads alike.

    If neither day field starts with ``*``, a day matches when either matches; if one of them
    covers every day, every day matches, which croniter would not see (it would treat the
    covering field as ``*`` and use the other alone).
    """
    dom, dow = parts[3], parts[5]
    if _unrestricted(dom) or _unrestricted(dow):
        return parts
    text = " ".join(parts)
    if _whole_field(text, 3) or _whole_field(text, 5):
        return [*parts[:3], "*", parts[4], "*"]
    return parts


def days_or(normalized: str) -> bool:
    """croniter's ``day_or`` for a normalized expression: OR only if both day fields restrict."""
    parts = normalized.split(" ")
    return not (_unrestricted(parts[3]) or _unrestricted(parts[5]))


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, CroniterBadCronError) and "out of range" in text:
        return "value out of range"
    if "is not acceptable" in text:
        return "invalid value"
    return text.replace("[", "").replace("]", "")


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression in a time zone; computes UTC fire instants."""

    expression: str
    timezone: str = "UTC"
    normalized: str = field(init=False)
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "normalized", normalize_expression(self.expression))
        object.__setattr__(self, "zone", parse_timezone(self.timezone))
        try:
            self.next_fire(datetime(2000, 1, 1, tzinfo=UTC))
        except CroniterBadDateError:
            raise ScheduleError(
                "cronExpression",
                f"never fires within {MAX_YEARS_WITHOUT_FIRE} years (impossible date?)",
            ) from None

    def next_fire(self, after: datetime) -> datetime:
        """The first fire instant strictly after ``after`` (aware), in UTC."""
        return next(self.iter_fires(after))

    def next_fires(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire instants strictly after ``after``."""
        fires: list[datetime] = []
        for instant in self.iter_fires(after):
            fires.append(instant)
            if len(fires) >= count:
                break
        return fires

    def iter_fires(self, after: datetime) -> Iterator[datetime]:
        """Fire instants strictly after ``after``, strictly increasing, in UTC."""
        if after.tzinfo is None:
            raise ValueError("after must be timezone-aware")
        wall = after.astimezone(self.zone).replace(tzinfo=None, fold=0)
        it = croniter(
            self.normalized,
            wall,
            ret_type=datetime,
            second_at_beginning=True,
            day_or=days_or(self.normalized),
            max_years_between_matches=MAX_YEARS_WITHOUT_FIRE,
        )
        last = after.astimezone(UTC)
        while True:
            candidate: datetime = it.get_next(datetime)
            instant = wall_to_instant(candidate, self.zone)
            if instant > last:
                last = instant
                yield instant


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """Map a naive wall time in ``zone`` to a UTC instant (gap → its end, fold → first)."""
    first = wall.replace(tzinfo=zone, fold=0)
    utc = first.astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == wall:
        return utc  # exists (for an ambiguous time, fold=0 is its first occurrence)
    # Nonexistent: the clocks jumped over it. Find the transition by bisection between
    # the two readings of the wall time (offsets before and after the jump).
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = utc
    if low > high:
        low, high = high, low
    before = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(zone).utcoffset() == before:
            low = mid
        else:
            high = mid
    return high


def parse_run_at(value: datetime | str, field: str = "runAt") -> datetime:
    """A one-time instant; naive values are UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ScheduleError(field, f"{value!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def next_fire_time(
    cron_expression: str | None,
    timezone: str,
    run_at: datetime | None,
    after: datetime,
) -> datetime | None:
    """When a job fires next after ``after``: its cron, its one-time ``run_at``, or never."""
    if cron_expression:
        return CronSchedule(cron_expression, timezone).next_fire(after)
    if run_at is not None and run_at > after:
        return run_at
    return None
