"""The attempt a worker thread is executing, shared by the middleware and the actor wrappers.

RunLog attaches it to the message after a successful claim (:func:`attach_attempt`) and
detaches it when the message is done; the middleware read it from the message
(:func:`attempt_of`), and the actor wrappers from this thread (:func:`current_attempt`). Backoff
and DeadLetter set ``ClaimedAttempt.settled`` once they own its final write, so RunLog, whose
``after_process_message`` runs after theirs (``worker.build_middleware`` states the order),
does not write it a second time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback as tb
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from dramatiq.middleware.time_limit import TimeLimitExceeded

from tickwork.errors import TickworkError
from tickwork.lifecycle import FailedAttempt, Failure
from tickwork.messaging import HTTP_ACTOR, OPTION, RunOptions
from tickwork.store.engine import is_unreachable

T = TypeVar("T")

_local = threading.local()
# Run ids this process has claimed (or is claiming) and not yet settled; a multiset, because a
# duplicate delivery of a run may be tried by a second thread while the first runs it.
_in_flight: Counter[int] = Counter()
_in_flight_lock = threading.Lock()

#: How much of a traceback is kept in ``job_runs.traceback``.
TRACEBACK_LIMIT = 30
#: How often an attempt's write is tried (after errors other than an unreachable database)
#: before it is left to the reaper.
DEFAULT_WRITE_ATTEMPTS = 3
#: While the database is unreachable (restarting, failing over, a cut network) a write is tried
#: again for this long: the worker thread waits the outage out instead of leaving an executed
#: attempt RUNNING, which the reaper would fail and retry (the job would run twice).
DEFAULT_UNREACHABLE_SECONDS = 300.0
#: Pause between tries while the database is unreachable, at most.
MAX_UNREACHABLE_PAUSE = 1.0


class AttemptTimeout(TickworkError):
    """timeout"""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds
        super().__init__("timeout" if seconds is None else f"timeout after {seconds:g} s")


class JobFailed(TickworkError):
    """The job failed; the message is the reason recorded in the run log.

    ``output`` (an HTTP response's body, say) and ``http_status`` (its status code) are
    recorded with the failure. A JobFailed is an expected failure: no traceback is stored.
    """

    def __init__(self, reason: str, output: str | None = None, *, http_status: int | None = None) -> None:
        self.output = output
        self.http_status = http_status
        super().__init__(reason)


@dataclass
class ClaimedAttempt:
    """The attempt this worker claimed and is executing (RunLog attaches it to its message)."""

    options: RunOptions
    worker_id: str
    is_http: bool
    result: Any = None
    #: The HTTP status code of an http attempt's response (None: no response, or not http).
    http_status: int | None = None
    #: True once Backoff or DeadLetter owns the attempt's final write (RunLog then skips it).
    settled: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def run_id(self) -> int:
        return self.options["run_id"]

    @property
    def timeout_seconds(self) -> float | None:
        return self.options.get("timeout_seconds")


def options_of(message: Any) -> RunOptions | None:
    """The tickwork options of a message, or None for a message that is not a tickwork run."""
    options: RunOptions | None = message.options.get(OPTION)
    return options


#: The old name of :func:`options_of` (``messaging.job_run_options`` builds them from a job).
run_options = options_of


#: The attribute of a message (Dramatiq's per-delivery ``MessageProxy``) holding its attempt.
_ATTEMPT_ATTRIBUTE = "tickwork_attempt"


def attach_attempt(message: Any, attempt: ClaimedAttempt) -> None:
    """Make ``attempt`` the claimed attempt of ``message`` (and of this thread, for the actor)."""
    setattr(message, _ATTEMPT_ATTRIBUTE, attempt)
    set_current_attempt(attempt)


def detach_attempt(message: Any) -> ClaimedAttempt | None:
    """The attempt of ``message``, no longer attached to it or to this thread."""
    attempt = attempt_of(message)
    if attempt is not None:
        setattr(message, _ATTEMPT_ATTRIBUTE, None)
    set_current_attempt(None)
    return attempt


def attempt_of(message: Any) -> ClaimedAttempt | None:
    """The claimed attempt of ``message``; None for a message that is not a claimed tickwork run."""
    attempt: ClaimedAttempt | None = getattr(message, _ATTEMPT_ATTRIBUTE, None)
    return attempt


def failed_attempt(message: Any, attempt: ClaimedAttempt) -> FailedAttempt:
    """What :mod:`tickwork.lifecycle` needs of the failed attempt, from its message (no read)."""
    options = attempt.options
    return FailedAttempt(
        run_id=options["run_id"],
        worker_id=attempt.worker_id,
        job_id=options["job_id"],
        job_name=options["job_name"],
        attempt=options["attempt"],
        scheduled_for=datetime.fromisoformat(options["scheduled_for"]),
        retry_count=options["retry_count"],
        retry_backoff_seconds=options["retry_backoff_seconds"],
        max_backoff_seconds=options["max_backoff_seconds"],
        # An http retry is built from the job again; a Python one keeps its call's arguments.
        arguments=None
        if message.actor_name == HTTP_ACTOR
        else {"args": list(message.args), "kwargs": dict(message.kwargs)},
        actor_name=message.actor_name,
        queue_name=message.queue_name,
    )


def failure_of(exception: BaseException, attempt: ClaimedAttempt) -> Failure:
    """How the attempt failed, as its row records it."""
    return Failure(
        error=describe_failure(exception, attempt.timeout_seconds),
        output=getattr(exception, "output", None),
        http_status=failure_http_status(exception, attempt),
        traceback=failure_traceback(exception, attempt),
    )


#: The old name of :class:`ClaimedAttempt`.
Attempt = ClaimedAttempt


def current_attempt() -> ClaimedAttempt | None:
    attempt: ClaimedAttempt | None = getattr(_local, "attempt", None)
    return attempt


def set_current_attempt(attempt: ClaimedAttempt | None) -> None:
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


def is_expected_failure(exception: BaseException) -> bool:
    """A failure a job reports on purpose (a non-2xx, a timeout, a network error): no traceback."""
    return isinstance(exception, JobFailed | AttemptTimeout | TimeLimitExceeded) or isinstance(
        exception.__cause__, TimeLimitExceeded
    )


def failure_traceback(exception: BaseException, attempt: ClaimedAttempt) -> str | None:
    """The traceback stored with a failed attempt: only for an unexpected exception in a Python
    handler. The http actor's failures (and any expected failure) are described by ``error``."""
    if attempt.is_http or is_expected_failure(exception):
        return None
    return format_traceback(exception)


def failure_http_status(exception: BaseException, attempt: ClaimedAttempt) -> int | None:
    """The HTTP status code recorded with a failed attempt (None without a response)."""
    status: int | None = getattr(exception, "http_status", None)
    return status if status is not None else attempt.http_status


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


def track_in_flight(run_id: int) -> None:
    """Note a run this process is about to claim: the heartbeat reports it as in flight."""
    with _in_flight_lock:
        _in_flight[run_id] += 1


def untrack_in_flight(run_id: int) -> None:
    with _in_flight_lock:
        _in_flight[run_id] -= 1
        if _in_flight[run_id] <= 0:
            del _in_flight[run_id]


def in_flight_runs() -> list[int]:
    """The runs this process holds; a RUNNING row of this worker missing here was abandoned."""
    with _in_flight_lock:
        return sorted(_in_flight)


def write_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    logger: logging.Logger,
    attempts: int = DEFAULT_WRITE_ATTEMPTS,
    unreachable_seconds: float = DEFAULT_UNREACHABLE_SECONDS,
) -> T:
    """An attempt's write (claim, outcome, retry row), tried again over a database outage.

    While the database is unreachable (:func:`~tickwork.store.engine.is_unreachable`) the write is
    tried again for up to ``unreachable_seconds``; any other error is tried ``attempts`` times.
    The last failure is raised (an outcome's row then stays RUNNING and the reaper settles it).
    """
    deadline = time.monotonic() + unreachable_seconds
    errors = 0
    waits = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if is_unreachable(exc) and time.monotonic() < deadline:
                waits += 1
                if waits == 1 or waits % 30 == 0:
                    logger.warning("Writing %s: the database is unreachable (%s); waiting for it.", what, exc)
                time.sleep(min(MAX_UNREACHABLE_PAUSE, 0.1 * waits))
                continue
            errors += 1
            if errors >= attempts:
                raise
            logger.warning("Writing %s failed; trying again.", what, exc_info=True)
            time.sleep(0.2 * errors)
