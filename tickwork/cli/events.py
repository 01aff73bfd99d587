"""``tickwork events list``: the audit trail (who changed what, when), newest first."""

from __future__ import annotations

import argparse
import json
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
from tickwork.store.events import EventKind, list_events
from tickwork.store.models import Event
from tickwork.views import EventOut

KINDS = [k.value for k in EventKind]


def register(sub: Any) -> None:
    events = sub.add_parser("events", help="the audit trail")
    events_sub = events.add_subparsers(dest="events_command", metavar="ACTION")
    events_sub.required = True
    ls = events_sub.add_parser("list", help="list changes, newest first")
    ls.add_argument("--job", type=job_ref, help="job id (also of a deleted job) or name")
    ls.add_argument("--kind", action="append", choices=KINDS, help="repeatable")
    ls.add_argument("--before-id", type=RUN_ID, metavar="ID", help="events older than this one (paging)")
    ls.add_argument("--limit", type=LIMIT, default=50, help="1 to 10000 (default 50)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)


def event_json(event: Event) -> dict[str, Any]:
    """An event as ``GET /events`` answers it (the model both share, camelCase)."""
    return EventOut.of(event).model_dump(mode="json", by_alias=True)


def _summary(event: Event) -> str:
    details = event.details or {}
    changes = details.get("changes")
    if event.kind == EventKind.JOB_UPDATED.value and changes:
        return ", ".join(
            f"{name}: {json.dumps(c['before'])} -> {json.dumps(c['after'])}" for name, c in changes.items()
        )
    shown = {k: v for k, v in details.items() if k != "changes"}
    return " ".join(f"{k}={json.dumps(v)}" for k, v in shown.items())


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    engine = migrated_engine(settings)
    job_id = None
    if args.job is not None:
        job_id = int(args.job) if args.job.isdigit() else resolve_job(engine, args.job).id
    rows = list_events(engine, job_id=job_id, kinds=args.kind, before_id=args.before_id, limit=args.limit)
    if args.json:
        next_before = rows[-1].id if len(rows) == args.limit else None
        print_json({"items": [event_json(e) for e in rows], "nextBeforeId": next_before})
        return 0
    print_table(
        [
            (
                e.id,
                e.created_at,
                e.actor if e.role is None else f"{e.actor} ({e.role})",
                e.kind,
                e.job_id,
                e.run_id,
                _summary(e),
            )
            for e in rows
        ],
        ["id", "when", "who", "kind", "job", "run", "details"],
    )
    return 0
