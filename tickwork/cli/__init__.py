"""The ``tickwork`` command. Each command group lives in its own module with a ``register``."""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
import traceback
from collections.abc import Sequence

from tickwork.errors import DatabaseNotMigrated, TickworkError, ValidationError

#: Modules under ``tickwork.cli`` that add subcommands (each has ``register(subparsers)``).
COMMAND_MODULES = [
    "db",
    "worker",
    "scheduler",
    "serve",
    "token",
    "jobs",
    "runs",
    "dlq",
    "events",
    "notifications",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line naming the argument and the reason (the usage is one --help away).
        print(f"tickwork: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tickwork", description="A distributed job scheduler for Python.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"tickwork.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; bad input exits 2 with the field and reason, other failures exit 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or EXIT_OK)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError as exc:
        if not _stdout_closed():  # a broken connection to a service, not our reader
            print(f"tickwork: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
            return EXIT_FAILURE
        # The reader went away (`tickwork runs list --json | head -1`): it has what it wanted.
        # Point stdout at /dev/null so the interpreter's final flush cannot complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except ValidationError as exc:
        print(f"tickwork: invalid {exc.field}: {exc.reason}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseNotMigrated as exc:
        print(f"tickwork: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except TickworkError as exc:
        print(f"tickwork: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # narrowed by _unavailable; anything else is a bug and re-raised
        message = _unavailable(exc)
        if message is None:
            raise  # a bug: its traceback is what a report needs
        print(f"tickwork: {message}", file=sys.stderr)
        if os.environ.get("TICKWORK_LOG_LEVEL", "").upper() == "DEBUG":
            traceback.print_exc()
        return EXIT_FAILURE


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has closed it."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _unavailable(exc: Exception) -> str | None:
    """One line for a service that is down or refusing (database, broker, Redis, the OS); else None."""
    import dramatiq.errors
    import pika.exceptions
    import redis.exceptions
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return f"database error: {_first_line(exc.orig or exc)}"
    if isinstance(exc, pika.exceptions.AMQPConnectionError | dramatiq.errors.ConnectionError):
        return f"broker unreachable: {_first_line(exc)}"
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"Redis unreachable: {_first_line(exc)}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
