"""Schedule math and fire planning: pure functions, below the store (which passes rows in)."""

from tickwork.schedule.cron import (
    CronSchedule,
    next_fire_time,
    normalize_expression,
    parse_run_at,
    parse_timezone,
    wall_to_instant,
)

__all__ = [
    "CronSchedule",
    "next_fire_time",
    "normalize_expression",
    "parse_run_at",
    "parse_timezone",
    "wall_to_instant",
]
