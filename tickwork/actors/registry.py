"""The ``@job`` functions of this process, and the runtime (settings, store, broker) they send with."""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dramatiq
from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.errors import ConfigError, ValidationError
from tickwork.store.handlers import is_registered_handler
from tickwork.store.models import Job

if TYPE_CHECKING:
    from tickwork.actors.decorator import JobFunction

_functions: dict[str, JobFunction] = {}
_lock = threading.Lock()


@dataclass
class Runtime:
    """What ``fn.send()`` needs: set by ``setup_broker`` (or built from the settings on first use)."""

    settings: Settings
    engine: Engine
    #: None: this process has no broker a worker reads (the embedded mode outside `tickwork
    #: dev`); a run is left PENDING for the outbox sweep of the process that owns the broker.
    broker: dramatiq.Broker | None
    jobs: dict[str, Job] = field(default_factory=dict)


_runtime: Runtime | None = None


def register(fn: JobFunction) -> None:
    """Add a ``@job`` function; a second function under the same name is an error."""
    with _lock:
        existing = _functions.get(fn.actor_name)
        same_origin = existing is not None and (existing.fn.__module__, existing.fn.__qualname__) == (
            fn.fn.__module__,
            fn.fn.__qualname__,
        )
        if existing is not None and not same_origin:
            raise ValidationError("name", f"a @job named {fn.actor_name!r} is already registered")
        _functions[fn.actor_name] = fn


def registered_functions() -> list[JobFunction]:
    with _lock:
        return list(_functions.values())


def get_function(name: str) -> JobFunction | None:
    with _lock:
        return _functions.get(name)


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> Runtime:
    """The runtime set by ``setup_broker``, or one for publishing only, built from the settings.

    In the embedded mode a process of its own (a script calling ``fn.send()`` beside a running
    ``tickwork dev``) gets no broker: an in-memory broker of its own has no worker, so the run
    row is left unpublished and the dev process's outbox sweep publishes it (about 2 s).
    """
    global _runtime
    if _runtime is None:
        from tickwork.config import get_settings
        from tickwork.messaging import make_broker
        from tickwork.store.engine import make_engine

        settings = get_settings()
        broker = None if settings.embedded_broker else make_broker(settings, middleware=[])
        _runtime = Runtime(settings=settings, engine=make_engine(settings), broker=broker)
    return _runtime


def validate_python_handler(name: str, engine: Engine | None = None) -> None:
    """The ``python`` handler of an API-defined job must name a registered ``@job`` function.

    Checks this process's registry, then (for an API process that does not import the job
    modules) the decorated jobs workers have registered in the store.
    """
    if get_function(name) is not None:
        return
    if engine is not None and is_registered_handler(engine, name):
        return
    raise ValidationError("handlerData", f"no @job function named {name!r} is registered")


def import_job_modules(settings: Settings) -> None:
    """Import ``TICKWORK_IMPORTS`` so their ``@job`` functions register; a bad name is a config error."""
    for module in settings.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError("TICKWORK_IMPORTS", f"cannot import {module!r}: {exc}") from None


def register_definitions(engine: Engine) -> dict[str, Job]:
    """Upsert every ``@job`` definition of this process into the store (by name); returns them."""
    from tickwork.store.jobs import upsert_decorated_job

    return {fn.actor_name: upsert_decorated_job(engine, fn.spec) for fn in registered_functions()}
