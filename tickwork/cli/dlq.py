"""``tickwork dlq list|replay|purge``: runs whose retries are spent."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import Engine

from tickwork import operations
from tickwork.cli.common import LIMIT, RUN_ID, migrated_engine, print_json, settings_and_logging
from tickwork.cli.runs import print_runs, run_json
from tickwork.errors import Conflict, NotFound, ValidationError
from tickwork.messaging import make_broker
from tickwork.store.runs import get_run
from tickwork.vocabulary import RunStatus


def register(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="the dead-letter queue")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")
    dlq_sub.required = True
    ls = dlq_sub.add_parser("list", help="dead runs with their reason, newest first")
    ls.add_argument("--limit", type=LIMIT, default=50, help="1 to 10000 (default 50)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    replay = dlq_sub.add_parser("replay", help="run a dead run again as a new attempt")
    replay.add_argument("run_id", type=RUN_ID, nargs="+", help="dead run ids")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_replay)
    purge = dlq_sub.add_parser("purge", help="discard dead runs (they stay in history as DISCARDED)")
    purge.add_argument("run_id", type=RUN_ID, nargs="*", help="dead run ids")
    purge.add_argument("--all", action="store_true", help="discard every dead run")
    purge.add_argument("--json", action="store_true")
    purge.set_defaults(func=cmd_purge)


def dead_runs(engine: Engine, run_ids: list[int], action: str) -> list[int]:
    """``run_ids`` without repeats, once every one is a DEAD run; else exit 1 naming each that is
    missing or not DEAD, before anything is changed."""
    unique = list(dict.fromkeys(run_ids))
    missing: list[str] = []
    alive: list[str] = []
    for run_id in unique:
        try:
            status = get_run(engine, run_id).status
        except NotFound:
            missing.append(str(run_id))
            continue
        if status != RunStatus.DEAD.value:
            alive.append(f"run {run_id} is {status}, not DEAD")
    if missing or alive:
        problems = ([f"run(s) {', '.join(missing)} not found"] if missing else []) + alive
        error = NotFound if not alive else Conflict
        raise error(f"{'; '.join(problems)} (nothing {action})")
    return unique


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    runs = operations.list_dead(migrated_engine(settings), limit=args.limit)
    if args.json:
        print_json({"items": [run_json(r) for r in runs]})
    else:
        print_runs(runs)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    engine = migrated_engine(settings)
    replayed = []
    for run_id in dead_runs(engine, args.run_id, "replayed"):
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
    settings = settings_and_logging(one_shot=True)
    engine = migrated_engine(settings)
    run_ids = None if args.all else dead_runs(engine, args.run_id, "discarded")
    purged = operations.purge(settings, engine, make_broker(settings), run_ids)
    if args.json:
        print_json({"purged": purged})
    else:
        print(f"discarded {purged} dead run(s)")
    if run_ids is not None and purged < len(run_ids):
        left = [str(i) for i in run_ids if get_run(engine, i).status != RunStatus.DISCARDED.value]
        if left:
            raise Conflict(f"run(s) {', '.join(left)} changed while being discarded (no longer DEAD)")
    return 0
