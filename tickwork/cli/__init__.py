"""The ``tickwork`` command. Each command group lives in its own module with a ``register``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tickwork.errors import DatabaseNotMigrated, TickworkError, ValidationError

#: Modules under ``tickwork.cli`` that add subcommands (each has ``register(subparsers)``).
COMMAND_MODULES = ["db", "worker", "scheduler", "serve", "token", "jobs", "runs", "dlq"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"tickwork: error: {message}", file=sys.stderr)
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
        return int(args.func(args) or EXIT_OK)
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
