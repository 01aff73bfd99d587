"""``tickwork runs list|show``: the run log, one row per attempt."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from tickwork.cli.common import (
    LIMIT,
    RUN_ID,
    job_ref,
    migrated_engine,
    print_json,
    print_table,
    settings_and_logging,
)
from tickwork.cli.jobs import resolve_job
from tickwork.store.models import JobRun
from tickwork.store.runs import get_run, list_runs
from tickwork.views import RunOut
from tickwork.vocabulary import RunStatus

STATUSES = [s.value for s in RunStatus]


def register(sub: Any) -> None:
    runs = sub.add_parser("runs", help="the run log")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    runs_sub.required = True
    ls = runs_sub.add_parser("list", help="list runs, newest first")
    ls.add_argument("--job", type=job_ref, help="job id or name")
    ls.add_argument("--status", action="append", type=str.upper, choices=STATUSES, help="repeatable")
    ls.add_argument("--since", type=parse_since, help="created at or after (ISO 8601, naive = UTC)")
    ls.add_argument("--limit", type=LIMIT, default=50, help="1 to 10000 (default 50)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    show = runs_sub.add_parser("show", help="one attempt with its output and error")
    show.add_argument("run_id", type=RUN_ID)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)


def run_json(run: JobRun) -> dict[str, Any]:
    return RunOut.of(run).model_dump(mode="json", by_alias=True)


def print_runs(runs: list[JobRun]) -> None:
    print_table(
        [
            (r.id, r.job_id, r.status, r.attempt, r.trigger, r.scheduled_for, r.finished_at, _short(r.error))
            for r in runs
        ],
        ["id", "job", "status", "attempt", "trigger", "scheduled for", "finished", "error"],
    )


def _short(text: str | None, width: int = 60) -> str | None:
    if text is None:
        return None
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def parse_since(value: str) -> datetime:
    """An argparse ``type``: an ISO 8601 date or date-time (naive = UTC), as a UTC instant."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 date-time in range (e.g. 2026-01-31 or 2026-01-31T08:00:00Z)"
        ) from None


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    engine = migrated_engine(settings)
    job_id = resolve_job(engine, args.job).id if args.job else None
    runs = list_runs(engine, job_id=job_id, status=args.status, since=args.since, limit=args.limit)
    if args.json:
        print_json({"items": [run_json(r) for r in runs]})
    else:
        print_runs(runs)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    engine = migrated_engine(settings)
    run = get_run(engine, args.run_id)
    data = run_json(run)
    if args.json:
        print_json(data)
        return 0
    long_fields = ("output", "error", "traceback", "arguments")
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key not in long_fields:
            print(f"{key.ljust(width)}  {'-' if value is None else value}")
    for key in long_fields:
        if data[key] not in (None, ""):
            print(f"\n{key}:\n{data[key]}")
    return 0
