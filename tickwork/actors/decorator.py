"""The ``@job`` decorator: a function becomes a Dramatiq actor and a stored job definition."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict, overload

import pydantic

from tickwork.actors.registry import get_runtime, register
from tickwork.errors import ValidationError
from tickwork.spec import JobSpec
from tickwork.vocabulary import HandlerType, RunTrigger

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: Defaults of the decorator (the same as an API-defined job's).
DEFAULT_BACKOFF_SECONDS = 10
DEFAULT_MAX_BACKOFF_SECONDS = 3600
DEFAULT_QUEUE = "default"


class JobFunction:
    """A ``@job`` function: still callable as the plain function, plus ``send`` and its definition.

    ``actor_name`` is the job's name (and its Dramatiq actor's name, and the ``handlerData`` an
    API-defined ``python`` job uses to call it).
    """

    def __init__(self, fn: Callable[..., Any], spec: JobSpec) -> None:
        self.fn = fn
        self.spec = spec
        self.actor_name = spec.name
        self.queue = spec.queue
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<JobFunction {self.actor_name}>"

    def send(self, *args: Any, **kwargs: Any) -> int:
        """Run now, outside any schedule: a PENDING run row (trigger ``manual``), then a publish.

        Returns the run id. If the publish fails, the row stays PENDING and the outbox sweep
        publishes it. Arguments must be JSON-serializable.
        """
        from tickwork.lifecycle import fire_now
        from tickwork.store.jobs import upsert_decorated_job

        arguments = {"args": list(args), "kwargs": dict(kwargs)}
        try:
            encoded = json.dumps(arguments)
        except (TypeError, ValueError) as exc:
            raise ValidationError("arguments", f"must be JSON-serializable: {exc}") from None
        runtime = get_runtime()
        limit = runtime.settings.max_payload_bytes
        if len(encoded.encode()) > limit:
            raise ValidationError(
                "arguments",
                f"{len(encoded.encode())} bytes of JSON, more than TICKWORK_MAX_PAYLOAD_BYTES ({limit})",
            )
        job = runtime.jobs.get(self.actor_name)
        if job is None:
            job = upsert_decorated_job(runtime.engine, self.spec)
            runtime.jobs[self.actor_name] = job
        return fire_now(
            runtime.settings,
            runtime.engine,
            runtime.broker,
            job,
            trigger=RunTrigger.MANUAL,
            arguments=arguments,
        )


class JobOptions(TypedDict, total=False):
    """The keyword arguments of :func:`job`, for its typed overloads (defaults: :func:`job`'s)."""

    cron: str | None
    tz: str
    retries: int
    backoff: int
    max_backoff: int
    timeout: float | None
    queue: str
    name: str | None


@overload
def job(fn: Callable[..., Any], /, **options: Unpack[JobOptions]) -> JobFunction: ...


@overload
def job(fn: None = None, /, **options: Unpack[JobOptions]) -> Callable[[Callable[..., Any]], JobFunction]: ...


def job(
    fn: Callable[..., Any] | None = None,
    *,
    cron: str | None = None,
    tz: str = "UTC",
    retries: int = 0,
    backoff: int = DEFAULT_BACKOFF_SECONDS,
    max_backoff: int = DEFAULT_MAX_BACKOFF_SECONDS,
    timeout: float | None = None,
    queue: str = DEFAULT_QUEUE,
    name: str | None = None,
) -> JobFunction | Callable[[Callable[..., Any]], JobFunction]:
    """Make ``fn`` (sync or ``async def``) a tickwork job: ``@job`` or ``@job(cron=…, …)``, typed
    for both (a strict mypy run sees a :class:`JobFunction`, not an untyped decorator).

    Parameters:
      cron: a schedule (6-field with seconds, 5-field, or ``@hourly``-style); None runs on demand.
      tz: the IANA time zone of the schedule.
      retries: retries after a failed attempt (attempt n+1 waits ``min(max_backoff, backoff*2^(n-1))``).
      backoff: the first retry's delay in seconds.
      max_backoff: the cap on a retry's delay in seconds.
      timeout: seconds an attempt may run (sync: Dramatiq's TimeLimit; async: ``asyncio.timeout``).
      queue: the queue it runs on (workers can be limited to queues).
      name: the job's name, unique; defaults to the function's ``__name__``.

    An invalid argument raises :class:`tickwork.errors.ValidationError` when the module is imported.
    """

    def decorate(func: Callable[..., Any]) -> JobFunction:
        try:
            spec = JobSpec(
                name=name or func.__name__,
                cron_expression=cron,
                timezone=tz,
                handler_type=HandlerType.PYTHON,
                handler_data=name or func.__name__,
                retry_count=retries,
                retry_backoff_seconds=backoff,
                max_backoff_seconds=max_backoff,
                timeout_seconds=timeout,
                queue=queue,
            )
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "job"
            raise ValidationError(field, err["msg"].removeprefix("Value error, ")) from None
        wrapped = JobFunction(func, spec)
        register(wrapped)
        return wrapped

    if fn is not None:
        return decorate(fn)
    return decorate
