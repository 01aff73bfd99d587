"""Logging: one line per event, JSON or text, with job/run/attempt/worker/message ids as fields.

Ids reach a record two ways: ``logger.info("claimed", extra={"run_id": 5})`` for one line, or
:func:`log_context` for every line logged while a block runs (a worker binds the attempt's ids
around the actor, so a handler's own log lines and library warnings carry them too). ``extra``
wins over the bound context. The bound context is a :mod:`contextvars` value: each worker thread
and each asyncio task sees its own.

Both formatters pass every line through :func:`tickwork.redaction.redact_text` (URL userinfo,
credential-like header and query values: Dramatiq logs a failed message's arguments), and the
text format escapes control characters in the event, so input cannot forge a log line.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from tickwork.redaction import redact_text

CONTEXT_FIELDS = ("job_id", "job_name", "run_id", "attempt", "worker_id", "message_id", "node_id")
#: Library loggers that are chatty at INFO; kept at WARNING unless tickwork itself is at DEBUG.
NOISY_LOGGERS = (
    "pika",
    "httpx",
    "httpcore",
    "apscheduler.executors",  # every tick and sweep at INFO otherwise
    "apscheduler.scheduler",
    "alembic",  # "Context impl MySQLImpl." on every start-up schema check
)

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "tickwork_log_context", default=None
)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (``None`` values dropped) to every record logged inside the block."""
    current = dict(_context.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    token = _context.set(current)
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**fields: Any) -> contextvars.Token[dict[str, Any] | None]:
    """Add ``fields`` until :func:`reset_log_context` (for hooks that open and close in two calls)."""
    current = dict(_context.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    return _context.set(current)


def reset_log_context(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _context.reset(token)


def current_log_context() -> dict[str, Any]:
    return dict(_context.get() or {})


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields of a record: the bound context, overridden by ``extra=``."""
    fields = {k: v for k, v in (_context.get() or {}).items() if k in CONTEXT_FIELDS}
    for key in CONTEXT_FIELDS:
        value = getattr(record, key, None)
        if value is not None:
            fields[key] = value
    return {key: fields[key] for key in CONTEXT_FIELDS if key in fields}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``event``, the ids, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact_text(record.getMessage()),
        }
        data.update(record_fields(record))
        data["pid"] = record.process
        if record.exc_info:
            data["exc"] = redact_text(self.formatException(record.exc_info))
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-23T03:30:00.123Z INFO    tickwork.worker: event job_id=3 run_id=17``.

    A value with spaces or quotes is JSON-quoted, so the line stays one line and splits cleanly.
    Control characters in the event (a newline in a token's ``sub``, say) are escapes
    (``\\n``, ``\\u001b``): only a traceback continues an event on further lines.
    """

    def __init__(self) -> None:
        super().__init__("%(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return (
            datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )

    def format(self, record: logging.LogRecord) -> str:
        event = escape_controls(record.getMessage())
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {event}"
        ctx = " ".join(f"{key}={_text_value(value)}" for key, value in record_fields(record).items())
        if ctx:
            line = f"{line} {ctx}"  # ids stay on the event's line, not the traceback's
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return redact_text(line)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` on one line: control characters (and the Unicode line separators) as escapes."""
    return _CONTROL_RE.sub(lambda m: _ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), text)


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def configure_logging(level: str = "INFO", fmt: str = "text", *, exclusive: bool = False) -> None:
    """Install one stderr handler on the root logger (idempotent: calling again replaces it).

    ``exclusive`` also removes every other root handler. A Dramatiq worker process has one of
    its own (``logging.basicConfig`` on the pipe its parent relays, which is ``sys.stderr`` there);
    calling this with ``exclusive=True`` from the process's boot hook makes every event one line
    in tickwork's format instead of two lines in two formats.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if exclusive or getattr(old, "_tickwork", False):
            root.removeHandler(old)
    handler._tickwork = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    numeric = logging.getLevelName(level)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric if isinstance(numeric, int) else 0))
