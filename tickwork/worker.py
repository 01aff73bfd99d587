"""The tickwork worker: a Dramatiq broker with tickwork's middleware and actors, and ways to run it.

``dramatiq tickwork.worker`` (and ``tickwork worker``) use the module-level ``broker``, built from
the environment's settings when this module is imported; the database work (registering the
``@job`` definitions, finding the queues of stored jobs) is deferred to worker boot, so importing
the module touches no service.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.middleware import AgeLimit, Callbacks, Middleware, ShutdownNotifications
from sqlalchemy import Engine

from tickwork import tracing
from tickwork.actors.binding import bind_http_actor, bind_job
from tickwork.actors.registry import (
    Runtime,
    import_job_modules,
    register_definitions,
    registered_functions,
    set_runtime,
)
from tickwork.config import Settings, configure_logging, get_settings
from tickwork.heartbeats import HeartbeatStore, current_worker_id
from tickwork.messaging import make_broker, queue_name
from tickwork.middleware.backoff import Backoff
from tickwork.middleware.dead_letter import DeadLetter
from tickwork.middleware.event_loop import EventLoop
from tickwork.middleware.heartbeat import Heartbeat
from tickwork.middleware.log_context import LogContext
from tickwork.middleware.metrics import Metrics
from tickwork.middleware.pipelines import Pipelines
from tickwork.middleware.run_log import RunLog
from tickwork.middleware.time_limit import TimeLimit
from tickwork.middleware.traces import Traces
from tickwork.store.engine import ensure_migrated, make_engine
from tickwork.store.jobs import stored_queues

logger = logging.getLogger(__name__)

#: Idle wake-up of Dramatiq's consumers (ms): also how late a delayed retry may start.
DEFAULT_WORKER_TIMEOUT_MS = 100
DEFAULT_THREADS = 8
#: How often a running worker looks for queues of newly stored jobs (seconds).
DEFAULT_QUEUE_REFRESH_SECONDS = 5.0


class JobRegistration(Middleware):
    """At worker boot: check the schema, upsert the ``@job`` definitions, consume stored jobs' queues.

    While the worker runs, the queues stored jobs name are re-read every ``queue_refresh_seconds``,
    so a job created through the API on a new queue is consumed without a worker restart.

    Parameters:
      settings: the settings.
      engine: the store.
      queue_refresh_seconds: how often the queues of stored jobs are re-read.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        queue_refresh_seconds: float = DEFAULT_QUEUE_REFRESH_SECONDS,
    ) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.settings = settings
        self.engine = engine
        self.queue_refresh_seconds = queue_refresh_seconds
        self.done = False
        self._stop = threading.Event()

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if not self.done:
            register_jobs(self.settings, self.engine, broker)
            self.done = True

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.clear()
        threading.Thread(
            target=self._refresh_queues, args=(broker,), name="tickwork-queues", daemon=True
        ).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()

    def _refresh_queues(self, broker: dramatiq.Broker) -> None:
        while not self._stop.wait(self.queue_refresh_seconds):
            try:
                declare_stored_queues(self.settings, self.engine, broker)
            except Exception:
                self.logger.warning("Reading the queues of stored jobs failed.", exc_info=True)


class WorkerProcess(Middleware):
    """Per-process set-up of a ``dramatiq tickwork.worker`` process: tickwork's log format and
    the ``/metrics`` endpoint.

    Every worker process tries to serve ``metrics_port``; the first one binds it and, with
    ``PROMETHEUS_MULTIPROC_DIR`` set (``tickwork worker`` sets it), serves all processes' metrics.

    Parameters:
      settings: the settings.
    """

    def __init__(self, *, settings: Settings) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.settings = settings

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        configure_logging(self.settings.log_level, self.settings.log_format, exclusive=True)
        if self.settings.metrics_port:
            from tickwork.metrics import start_metrics_server

            try:
                start_metrics_server(self.settings.metrics_port)
            except OSError:
                self.logger.debug(
                    "metrics port %d is served by a sibling process", self.settings.metrics_port
                )

    def before_process_stop(self, broker: dramatiq.Broker) -> None:
        from tickwork.metrics import mark_process_dead

        mark_process_dead()


def declare_stored_queues(settings: Settings, engine: Engine, broker: dramatiq.Broker) -> None:
    """Consume every queue a stored job names (declaring a queue starts a consumer in a worker)."""
    queues = stored_queues(engine)
    declared = broker.get_declared_queues()
    for queue in sorted(queues):
        if queue_name(settings, queue) not in declared:
            broker.declare_queue(queue_name(settings, queue))


def register_jobs(settings: Settings, engine: Engine, broker: dramatiq.Broker) -> None:
    """Upsert every registered ``@job`` into the store and declare the queues stored jobs use."""
    ensure_migrated(engine)
    runtime = Runtime(settings=settings, engine=engine, broker=broker)
    for job_fn in registered_functions():
        if job_fn.actor_name not in broker.actors:
            bind_job(broker, settings, job_fn)
    runtime.jobs.update(register_definitions(engine))
    set_runtime(runtime)
    declare_stored_queues(settings, engine, broker)


#: Tickwork's middleware in the order Dramatiq runs their ``before_*`` hooks; ``after_*`` hooks run
#: in reverse. The order is behaviour (tests/unit/test_middleware_order.py fails if it changes):
#:
#: - LogContext first: every later hook of a message logs with its job, run and attempt ids.
#: - Heartbeat before RunLog: the process beats before it claims anything.
#: - RunLog before DeadLetter and Backoff: it claims the attempt and attaches it to the message
#:   before the actor runs; its ``after_process_message`` runs after theirs, so it writes the
#:   outcome only of an attempt neither of them settled (``ClaimedAttempt.settled``: a success, or a
#:   failure on a broker without them).
#: - DeadLetter and Backoff each take only their side of :func:`tickwork.lifecycle.next_step`
#:   (dead, retry) and mark the attempt settled before their write, so RunLog never writes a
#:   failure they own, even when that write fails (the reaper then settles it).
#: - TimeLimit after them: a timeout surfaces as the actor's exception that Backoff sees.
#: - Dramatiq's ``Retries`` is left out: Backoff owns retries (two retriers enqueue twice).
#: - Traces last: its events bracket the actor itself, and its ``after_process_message`` runs
#:   first, while the attempt's span (begun by RunLog's claim, ended by RunLog) is still current,
#:   so the retry message Backoff builds carries it.
MIDDLEWARE_ORDER = (
    "LogContext",
    "Metrics",
    "Heartbeat",
    "RunLog",
    "DeadLetter",
    "Backoff",
    "TimeLimit",
    "AgeLimit",
    "ShutdownNotifications",
    "Callbacks",
    "Pipelines",
    "EventLoop",
    "Traces",
)


def build_middleware(settings: Settings, engine: Engine) -> list[Middleware]:
    """Tickwork's middleware in :data:`MIDDLEWARE_ORDER` (see there why the order matters)."""
    middleware: list[Middleware] = [
        LogContext(worker_id=current_worker_id),
        Metrics(),
        Heartbeat(
            store=HeartbeatStore.from_settings(settings),
            interval_seconds=settings.heartbeat_interval_seconds,
        ),
        RunLog(
            engine=engine,
            worker_id=current_worker_id,
            output_max_bytes=settings.output_max_bytes,
            settings=settings,
            commit_delay_ms=settings.commit_delay_ms,
        ),
        DeadLetter(settings=settings, engine=engine),
        Backoff(engine=engine),
        TimeLimit(),
        AgeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        EventLoop(),
        Traces(),
    ]
    assert tuple(type(m).__name__ for m in middleware) == MIDDLEWARE_ORDER
    return middleware


def setup_broker(
    settings: Settings, *, engine: Engine | None = None, register: bool = True
) -> dramatiq.Broker:
    """The tickwork broker: middleware, the http actor and every ``@job`` actor on namespaced queues.

    Imports ``settings.imports`` (modules with ``@job`` functions), upserts the decorated jobs
    (``register=False`` defers that to worker boot), and makes the broker Dramatiq's global one.
    """
    engine = engine or make_engine(settings)
    tracing.configure(settings.traces_exporter, "tickwork-worker")
    import_job_modules(settings)
    broker = make_broker(settings, middleware=build_middleware(settings, engine))
    registration = JobRegistration(settings=settings, engine=engine)
    broker.add_middleware(registration)
    bind_http_actor(broker, settings)
    broker.declare_queue(queue_name(settings, "default"))
    for job_fn in registered_functions():
        bind_job(broker, settings, job_fn)
    set_runtime(Runtime(settings=settings, engine=engine, broker=broker))
    if register:
        register_jobs(settings, engine, broker)
        registration.done = True
    dramatiq.set_broker(broker)
    return broker


class WorkerHandle:
    """A running worker: in-process threads, or ``tickwork worker`` subprocesses. ``stop()`` ends it."""

    def __init__(
        self, *, worker: dramatiq.Worker | None = None, process: subprocess.Popen[bytes] | None = None
    ) -> None:
        self.worker = worker
        self.process = process

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful: in-flight messages finish (or are given back to the broker) first."""
        if self.worker is not None:
            self.worker.stop(timeout=int(timeout * 1000))
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def join(self) -> None:
        """Wait until the in-process worker's queues are drained and their outcomes written (tests)."""
        if self.worker is not None:
            self.worker.join()
            for middleware in self.worker.broker.middleware:
                if isinstance(middleware, RunLog):
                    middleware.flush()


def start_worker(
    settings: Settings,
    broker: dramatiq.Broker | None = None,
    *,
    processes: int = 1,
    threads: int = DEFAULT_THREADS,
    queues: Sequence[str] | None = None,
    worker_timeout_ms: int = DEFAULT_WORKER_TIMEOUT_MS,
    env: dict[str, str] | None = None,
) -> WorkerHandle:
    """Start a worker for embedded mode and tests; returns a handle with ``stop()``.

    ``processes=1`` runs worker threads in this process on ``broker`` (``setup_broker`` is called
    when it is None). ``processes > 1`` starts ``tickwork worker`` as a subprocess (RabbitMQ only,
    with the environment ``env`` or this process's).
    """
    if processes > 1:
        if settings.embedded_broker:
            raise ValueError("several worker processes need RabbitMQ (the in-memory broker is per process)")
        args = [
            sys.executable,
            "-m",
            "tickwork",
            "worker",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ]
        if queues:
            args += ["--queues", *queues]
        return WorkerHandle(process=subprocess.Popen(args, env=env or dict(os.environ)))
    broker = broker or setup_broker(settings)
    if not getattr(broker, "_tickwork_process_booted", False):
        broker.emit_after("process_boot")  # starts TimeLimit's deadline thread
        broker._tickwork_process_booted = True  # type: ignore[attr-defined]
    whitelist = {queue_name(settings, q) for q in queues} if queues else None
    worker = dramatiq.Worker(
        broker, queues=whitelist, worker_threads=threads, worker_timeout=worker_timeout_ms
    )
    worker.start()
    return WorkerHandle(worker=worker)


def _module_broker() -> dramatiq.Broker:
    settings = get_settings()
    module_broker = setup_broker(settings, register=False)
    module_broker.add_middleware(WorkerProcess(settings=settings))
    return module_broker


#: The broker ``dramatiq tickwork.worker`` runs (built from ``TICKWORK_*`` settings on import).
broker: dramatiq.Broker = _module_broker()
