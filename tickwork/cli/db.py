"""``tickwork db upgrade|current``."""

from __future__ import annotations

import argparse
from typing import Any

from tickwork.cli.common import settings_and_logging
from tickwork.errors import TickworkError, ValidationError
from tickwork.store.engine import current_revision, head_revision, make_engine, upgrade


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION")
    db_sub.required = True
    up = db_sub.add_parser("upgrade", help="apply migrations up to the newest schema")
    up.add_argument("revision", nargs="?", default="head", type=_revision, help="default: head")
    up.set_defaults(func=cmd_upgrade)
    cur = db_sub.add_parser("current", help="show the schema revision")
    cur.set_defaults(func=cmd_current)


def _revision(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("give a migration revision, e.g. head")
    return text


def cmd_upgrade(args: argparse.Namespace) -> int:
    from alembic.util import CommandError

    settings = settings_and_logging(one_shot=True)
    try:
        upgrade(settings, args.revision)
    except CommandError as exc:
        if args.revision == "head":  # the database's state, not the input
            raise TickworkError(f"cannot upgrade the database: {exc}") from None
        raise ValidationError("revision", f"{exc} (the newest is {head_revision()}, or say head)") from None
    print(f"database at revision {current_revision(make_engine(settings))}")
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    current = current_revision(make_engine(settings))
    print(f"current: {current or 'none'}  head: {head_revision()}")
    return 0 if current == head_revision() else 1
