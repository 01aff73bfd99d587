"""The scheduler node: lease, ticker, publisher, sweeps, reaper (schedule math: :mod:`tickwork.schedule`)."""

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
