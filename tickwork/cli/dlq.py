"""``tickwork dlq list|replay|purge``: runs whose retries are spent."""

from __future__ import annotations

import argparse
from typing import Any

from tickwork import operations
from tickwork.cli.common import migrated_engine, print_json, settings_and_logging
from tickwork.cli.runs import print_runs, run_json
from tickwork.errors import ValidationError
from tickwork.messaging import make_broker
from tickwork.store.runs import get_run


def register(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="the dead-letter queue")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")
    dlq_sub.required = True
    ls = dlq_sub.add_parser("list", help="dead runs with their reason, newest first")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    replay = dlq_sub.add_parser("replay", help="run a dead run again as a new attempt")
    replay.add_argument("run_id", type=int, nargs="+")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_replay)
    purge = dlq_sub.add_parser("purge", help="discard dead runs (they stay in history as DISCARDED)")
    purge.add_argument("run_id", type=int, nargs="*")
    purge.add_argument("--all", action="store_true", help="discard every dead run")
    purge.add_argument("--json", action="store_true")
    purge.set_defaults(func=cmd_purge)


def cmd_list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        raise ValidationError("--limit", "must be between 1 and 10000")
    settings = settings_and_logging()
    runs = operations.list_dead(migrated_engine(settings), limit=args.limit)
    if args.json:
        print_json({"items": [run_json(r) for r in runs]})
    else:
        print_runs(runs)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    settings = settings_and_logging()
    engine = migrated_engine(settings)
    replayed = []
    for run_id in args.run_id:
        if settings.embedded_broker:
            # `tickwork dev` owns the in-process broker: its outbox sweep publishes the new row.
            new_id = operations.replay_later(engine, run_id)
        else:
            new_id = operations.replay(settings, engine, make_broker(settings), run_id)
        replayed.append(get_run(engine, new_id))
        if not args.json:
            print(f"run {run_id} replayed as run {new_id} (attempt {replayed[-1].attempt})")
    if args.json:
        print_json({"items": [run_json(r) for r in replayed]})
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    if not args.run_id and not args.all:
        raise ValidationError("run_id", "give the dead runs to discard, or --all")
    if args.run_id and args.all:
        raise ValidationError("--all", "give run ids or --all, not both")
    settings = settings_and_logging()
    engine = migrated_engine(settings)
    purged = operations.purge(settings, engine, make_broker(settings), None if args.all else args.run_id)
    if args.json:
        print_json({"purged": purged})
    else:
        print(f"discarded {purged} dead run(s)")
    return 0
