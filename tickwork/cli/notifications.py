"""``tickwork notifications list``: the webhook outbox (issue 13)."""

from __future__ import annotations

import argparse
from typing import Any

from tickwork.alerts import Event
from tickwork.cli.common import LIMIT, migrated_engine, print_json, print_table, settings_and_logging
from tickwork.store.alerts import list_notifications
from tickwork.store.models import NotificationStatus
from tickwork.views import NotificationOut


def register(sub: Any) -> None:
    notifications = sub.add_parser("notifications", help="webhook notifications and their delivery")
    actions = notifications.add_subparsers(dest="notifications_command", metavar="ACTION")
    actions.required = True
    ls = actions.add_parser("list", help="notifications, newest first")
    ls.add_argument("--status", choices=[s.value for s in NotificationStatus])
    ls.add_argument("--event", choices=[e.value for e in Event])
    ls.add_argument("--limit", type=LIMIT, default=50, help="1 to 10000 (default 50)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    rows = list_notifications(
        migrated_engine(settings), status=args.status, event=args.event, limit=args.limit
    )
    items = [NotificationOut.model_validate(row._mapping) for row in rows]
    if args.json:
        print_json({"items": [i.model_dump(mode="json", by_alias=True, exclude={"payload"}) for i in items]})
        return 0
    print_table(
        [(i.id, i.event, i.job_id, i.target, i.status, i.attempts, i.last_error) for i in items],
        ["id", "event", "job", "target", "status", "attempts", "last error"],
    )
    return 0
