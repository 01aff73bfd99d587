"""Helpers shared by command modules: settings, the engine, tables and JSON output."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from tickwork.config import Settings, configure_logging, load_settings
from tickwork.store.engine import ensure_migrated, make_engine


def settings_and_logging() -> Settings:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.log_level != "DEBUG":
        # The schema check opens an Alembic context, which logs two INFO lines per command.
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    return settings


def migrated_engine(settings: Settings) -> Engine:
    """The database engine, refusing an unmigrated database (exit 1 with the fix)."""
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
