"""Binding ``@job`` functions and the built-in actors to a broker, on namespaced queues."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware.time_limit import TimeLimitExceeded

from tickwork.actors.decorator import JobFunction
from tickwork.actors.http import http_request
from tickwork.config import Settings
from tickwork.messaging import HTTP_ACTOR, queue_name
from tickwork.middleware.attempt import AttemptTimeout, JobFailed, current_attempt

#: Failures a job reports on purpose: logged in one line by the worker, no traceback.
EXPECTED_FAILURES = (JobFailed, AttemptTimeout, TimeLimitExceeded)


async def _with_timeout(coro: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
    if timeout is None:
        return await coro
    try:
        async with asyncio.timeout(timeout) as scope:
            return await coro
    except TimeoutError:
        if scope.expired():
            raise AttemptTimeout(timeout) from None
        raise


def run_async(make_coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine on Dramatiq's event-loop thread, under the attempt's asyncio timeout."""
    attempt = current_attempt()
    timeout = attempt.timeout_seconds if attempt is not None else None
    loop_thread = get_event_loop_thread()
    if loop_thread is None:
        # No worker event loop (a direct call outside a worker): run on a private loop.
        return asyncio.run(_with_timeout(make_coro(), timeout))
    return loop_thread.run_coroutine(_with_timeout(make_coro(), timeout))


def _actor_callable(job_fn: JobFunction) -> Callable[..., None]:
    fn = job_fn.fn

    if job_fn.is_async:

        def call(*args: Any, **kwargs: Any) -> None:
            result = run_async(lambda: fn(*args, **kwargs))
            attempt = current_attempt()
            if attempt is not None:
                attempt.result = result

    else:

        def call(*args: Any, **kwargs: Any) -> None:
            result = fn(*args, **kwargs)
            attempt = current_attempt()
            if attempt is not None:
                attempt.result = result

    call.__name__ = job_fn.actor_name
    call.__qualname__ = job_fn.actor_name
    call.__module__ = fn.__module__
    return call


def bind_job(broker: dramatiq.Broker, settings: Settings, job_fn: JobFunction) -> dramatiq.Actor[Any, Any]:
    """Declare ``job_fn``'s actor (replacing an earlier one of the same name on this broker)."""
    broker.actors.pop(job_fn.actor_name, None)
    options: dict[str, Any] = {"throws": EXPECTED_FAILURES}
    if job_fn.is_async:
        options["asyncio_timeout"] = True
    return dramatiq.Actor(
        _actor_callable(job_fn),
        broker=broker,
        actor_name=job_fn.actor_name,
        queue_name=queue_name(settings, job_fn.queue),
        priority=0,
        options=options,
    )


def bind_http_actor(broker: dramatiq.Broker, settings: Settings) -> dramatiq.Actor[Any, Any]:
    def tickwork_http(url: str, **params: Any) -> None:
        # One deadline for the whole request: the job's timeoutSeconds, else the setting's.
        attempt = current_attempt()
        timeout = attempt.timeout_seconds if attempt is not None else None
        outcome = run_async(lambda: http_request(settings, url, timeout=timeout, **params))
        if attempt is not None:
            attempt.result = outcome.output
            attempt.http_status = outcome.status

    broker.actors.pop(HTTP_ACTOR, None)
    return dramatiq.Actor(
        tickwork_http,
        broker=broker,
        actor_name=HTTP_ACTOR,
        queue_name=queue_name(settings, "default"),
        priority=0,
        options={"asyncio_timeout": True, "throws": EXPECTED_FAILURES},
    )
