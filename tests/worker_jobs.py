"""@job functions the worker tests run (imported by workers through TICKWORK_IMPORTS)."""

from __future__ import annotations

import asyncio
import os
import time

from tickwork import job


def _touch(path: str | None, text: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{text} {os.getpid()}\n")


@job
def tw_noop() -> None:
    return None


@job
def tw_add(a: int, b: int) -> int:
    return a + b


@job
def tw_record(path: str, label: str = "ran") -> str:
    """Appends a line per execution: the tests count executions in the file."""
    _touch(path, label)
    return label


@job(retries=3, backoff=1, max_backoff=60)
def tw_always_fails(path: str | None = None) -> None:
    _touch(path, "fail")
    raise RuntimeError("always fails")


@job(retries=1, backoff=1, timeout=1)
def tw_sync_sleep(seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # pure Python: interruptible by TimeLimit
        time.sleep(0.01)
    return "slept"


@job(retries=0, timeout=1)
async def tw_async_sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


@job(retries=2, backoff=1, queue="slow")
def tw_long(path: str, seconds: float) -> str:
    _touch(path, "start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    _touch(path, "done")
    return "done"


@job
def tw_fire_log(path: str, label: str, seconds: float = 0.0) -> str:
    """Appends ``label run_id attempt scheduled_for time pid`` per execution, then works
    ``seconds``: the fault tests count executions of every attempt at the target, and attempts
    are in flight whenever a fault strikes."""
    from tickwork.middleware.attempt import current_attempt

    attempt = current_attempt()
    assert attempt is not None
    opts = attempt.options
    _touch(path, f"{label} {opts['run_id']} {opts['attempt']} {opts['scheduled_for']} {time.time():.3f}")
    time.sleep(seconds)
    return label
