"""The attempt a worker thread is executing, shared by the middleware and the actor wrappers.

RunLog sets it after a successful claim and clears it when the message is done; Backoff and
DeadLetter mark it settled once they have written its final state, so RunLog does not write it
a second time.
"""

from __future__ import annotations

import json
import threading
import traceback as tb
from dataclasses import dataclass
from typing import Any

from dramatiq.middleware.time_limit import TimeLimitExceeded

from tickwork.errors import TickworkError
from tickwork.messaging import OPTION, RunOptions

_local = threading.local()

#: How much of a traceback is kept in ``job_runs.traceback``.
TRACEBACK_LIMIT = 30


class AttemptTimeout(TickworkError):
    """timeout"""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds
        super().__init__("timeout" if seconds is None else f"timeout after {seconds:g} s")


class JobFailed(TickworkError):
    """The job failed; the message is the reason recorded in the run log.

    ``output`` (an HTTP response's status line and body, say) is recorded with the failure.
    """

    def __init__(self, reason: str, output: str | None = None) -> None:
        self.output = output
        super().__init__(reason)


@dataclass
class Attempt:
    """One claimed attempt on this thread."""

    options: RunOptions
    worker_id: str
    is_http: bool
    result: Any = None
    settled: bool = False

    @property
    def run_id(self) -> int:
        return self.options["run_id"]

    @property
    def timeout_seconds(self) -> float | None:
        return self.options.get("timeout_seconds")


def run_options(message: Any) -> RunOptions | None:
    """The tickwork options of a message, or None for a message that is not a tickwork run."""
    options: RunOptions | None = message.options.get(OPTION)
    return options


def current_attempt() -> Attempt | None:
    attempt: Attempt | None = getattr(_local, "attempt", None)
    return attempt


def set_current_attempt(attempt: Attempt | None) -> None:
    _local.attempt = attempt


def describe_failure(exception: BaseException, timeout_seconds: float | None = None) -> str:
    """The reason recorded in ``job_runs.error``: ``timeout...``, a job's own reason, or ``Type: message``."""
    if isinstance(exception, TimeLimitExceeded) or isinstance(exception.__cause__, TimeLimitExceeded):
        return str(AttemptTimeout(timeout_seconds))
    if isinstance(exception, TickworkError):
        return str(exception)
    text = str(exception)
    return f"{type(exception).__name__}: {text}" if text else type(exception).__name__


def format_traceback(exception: BaseException) -> str:
    return "".join(tb.format_exception(exception, limit=TRACEBACK_LIMIT))


def format_output(result: Any, max_bytes: int) -> str | None:
    """A job's return value as text (JSON where possible), cut to ``max_bytes`` of UTF-8."""
    if result is None:
        return None
    if isinstance(result, str):
        text = result
    else:
        try:
            text = json.dumps(result, default=str)
        except (TypeError, ValueError):
            text = repr(result)
    return truncate_utf8(text, max_bytes)


def truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")
