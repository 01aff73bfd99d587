"""Scheduling: schedule math (pure), the ticker, leader election, sweeps."""

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
