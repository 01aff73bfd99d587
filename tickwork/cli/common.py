"""Helpers shared by command modules: settings, the engine, tables and JSON output."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from tickwork.config import Settings, configure_logging, load_settings
from tickwork.store.engine import ensure_database_exists, ensure_migrated, make_engine

#: The largest id a run or job can have (a signed 64-bit column, as in the API).
MAX_ID = 2**63 - 1
#: The most rows one listing command prints.
MAX_LIMIT = 10_000


def int_range(low: int, high: int, what: str = "an integer") -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]``, else exit 2 naming the flag and the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            bounds = f"from {low} to {high}" if high < MAX_ID else f"from {low} up (below 2**63)"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {what} {bounds}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


#: ``--port`` of ``tickwork api`` and ``tickwork dev`` (0 picks a free port).
PORT = int_range(0, 65535, "a port number")
#: A run id argument.
RUN_ID = int_range(1, MAX_ID, "a run id")
#: ``--limit`` of the listing commands.
LIMIT = int_range(1, MAX_LIMIT, "a row count")


def text_arg(max_length: int) -> Callable[[str], str]:
    """An argparse ``type``: non-blank text of at most ``max_length`` characters."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError("must not be empty")
        if len(text) > max_length or not text.isprintable():
            raise argparse.ArgumentTypeError(f"must be printable text of at most {max_length} characters")
        return text

    parse.__name__ = "text"
    return parse


def job_ref(text: str) -> str:
    """An argparse ``type`` for ``job id or name``: digits are an id and must fit one."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a job id or name")
    if text.isdigit() and not 1 <= int(text) <= MAX_ID:
        raise argparse.ArgumentTypeError(f"{text} is out of range for a job id: from 1 up (below 2**63)")
    return text


def settings_and_logging(*, one_shot: bool = False) -> Settings:
    """Settings and logging for a command.

    ``one_shot`` commands (``jobs``, ``runs``, ``dlq``, ``db``) log a failure as one line, not a
    traceback, unless ``TICKWORK_LOG_LEVEL=DEBUG``: a broker that is down while ``jobs trigger``
    publishes is reported, and the run stays PENDING for the outbox sweep.
    """
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.log_level != "DEBUG":
        # The schema check opens an Alembic context, which logs two INFO lines per command.
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
        if one_shot:
            # pika logs each step of a refused connection as an ERROR with a traceback.
            logging.getLogger("pika").setLevel(logging.CRITICAL)
            for handler in logging.getLogger().handlers:
                if getattr(handler, "_tickwork", False):
                    handler.addFilter(_one_line)
    return settings


def _one_line(record: logging.LogRecord) -> bool:
    """Fold a logged exception into its record's line (``... (ConnectionError: refused)``)."""
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        record.msg = f"{record.getMessage()} ({type(exc).__name__}{': ' + detail if detail else ''})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
    return True


def migrated_engine(settings: Settings) -> Engine:
    """The database engine, refusing a missing or unmigrated database (exit 1 with the fix).

    A missing SQLite file is not created: these commands read or change an existing database.
    """
    ensure_database_exists(settings)
    engine = make_engine(settings)
    ensure_migrated(engine)
    return engine


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    """A plain aligned table (readable in a terminal, greppable in a script)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
