"""``tickwork dev``: API, scheduler and worker threads in one process (the embedded default).

With the default settings this is a SQLite file, Dramatiq's in-process ``StubBroker`` and
in-process leadership: nothing to install beyond the package. Job definitions and run history
live in the SQLite file, so they survive a restart; PENDING runs (published to a broker that
died with the previous process) are republished on start.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.config.settings import resolve_auth_secret
from tickwork.errors import TickworkError, ValidationError
from tickwork.store.engine import ensure_migrated, make_engine, upgrade
from tickwork.vocabulary import RunStatus

log = logging.getLogger(__name__)

DEFAULT_WORKER_THREADS = 4
REPUBLISH_BATCH = 1000


@dataclass
class Embedded:
    """The parts of one embedded process, for starting and stopping them together (and tests)."""

    settings: Settings
    engine: Engine
    broker: Any
    scheduler: Any
    worker: Any
    app: Any

    def start(self) -> None:
        republished = republish_pending(self.settings, self.engine, self.broker)
        if republished:
            log.info("republished %d PENDING run(s) from before the restart", republished)
        self.worker.start()
        self.scheduler.start()

    def stop(self) -> None:
        for part, stop in ((self.scheduler, "shutdown"), (self.worker, "stop")):
            try:
                getattr(part, stop)()
            except Exception:
                log.warning("stopping %s failed", type(part).__name__, exc_info=True)


class EmbeddedWorker:
    """Worker threads on the in-process broker, started and stopped with the other parts."""

    def __init__(self, settings: Settings, broker: Any, *, threads: int) -> None:
        self.settings = settings
        self.broker = broker
        self.threads = threads
        self.handle: Any = None

    def start(self) -> None:
        from tickwork.worker import start_worker

        self.handle = start_worker(self.settings, self.broker, threads=self.threads)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop(timeout=5)


def build(settings: Settings, *, engine: Engine | None = None, worker_threads: int | None = None) -> Embedded:
    """Wire broker, worker, scheduler and API on one engine (nothing started)."""
    from tickwork.api import create_app
    from tickwork.scheduler.service import SchedulerService
    from tickwork.worker import setup_broker

    engine = engine if engine is not None else make_engine(settings)
    broker = setup_broker(settings, engine=engine)
    worker = EmbeddedWorker(settings, broker, threads=worker_threads or DEFAULT_WORKER_THREADS)
    scheduler = SchedulerService(settings, engine=engine, broker=broker)
    app = create_app(settings, engine=engine, broker=broker, on_job_changed=lambda _job_id: scheduler.wake())
    app.state.tickwork.local_schedulers = lambda: [scheduler_presence(scheduler)]
    return Embedded(
        settings=settings, engine=engine, broker=broker, scheduler=scheduler, worker=worker, app=app
    )


def scheduler_presence(scheduler: Any) -> dict[str, Any]:
    """The in-process scheduler as ``GET /cluster`` lists a node (Redis presence keys' fields)."""
    return {
        "node_id": scheduler.node_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": scheduler.started_at.isoformat(),
        "leader": scheduler.lease.is_held(),
        "ttl_seconds": None,
    }


def republish_pending(settings: Settings, engine: Engine, broker: Any) -> int:
    """Publish every PENDING run again (their messages were in the previous process's memory)."""
    from tickwork.operations import publish_run
    from tickwork.store.runs import list_runs

    count = 0
    before_id: int | None = None
    while True:
        runs = list_runs(engine, status=RunStatus.PENDING.value, limit=REPUBLISH_BATCH, before_id=before_id)
        for run in runs:
            publish_run(settings, engine, broker, run.id)
            count += 1
        if len(runs) < REPUBLISH_BATCH:
            return count
        before_id = runs[-1].id


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0 picks a free port), or a one-line error.

    A port outside 0-65535, a host that does not resolve or is not this machine's are bad input
    (:class:`ValidationError`, exit 2); a port that is busy or not permitted is a conflict with
    the machine's state, not with the input (:class:`TickworkError`, exit 1), like a duplicate
    job name.
    """
    if not 0 <= port <= 65535:
        raise ValidationError("--port", f"{port} is out of range: must be a port number from 0 to 65535")
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise ValidationError("--host", f"cannot listen on {host!r}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except socket.gaierror as exc:
        sock.close()
        raise ValidationError("--host", f"cannot resolve {host!r}: {exc.strerror}") from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ValidationError("--host", f"{host!r} is not an address of this machine") from None
        raise TickworkError(
            f"cannot listen on {host}:{port} (--port or TICKWORK_API_PORT): {exc.strerror or exc}"
        ) from None
    sock.listen(2048)  # connections made as soon as the URL is printed wait in the backlog
    return sock


def run_embedded(settings: Settings, *, host: str, port: int, migrate: bool | None = None) -> int:
    """Serve until interrupted; prints the URL and an admin token first.

    ``migrate``: None (the default) applies the migrations to a SQLite database and refuses any
    other database that `tickwork db upgrade` has not brought up to date; True applies them to
    any database; False applies none (an unmigrated database is refused).
    """
    import uvicorn

    from tickwork.api.auth import Role, create_token

    # The SQLite file's own random secret (``<file>.secret``) unless one is configured.
    settings = resolve_auth_secret(settings)
    sock = listen_socket(host, port)  # a bad or busy port fails before the database is touched
    try:
        if migrate or (migrate is None and settings.is_sqlite):
            upgrade(settings)
        engine = make_engine(settings)
        ensure_migrated(engine)
    except BaseException:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound_port}"
    token = create_token(settings, Role.ADMIN)
    parts = build(settings, engine=engine)
    parts.start()
    print(f"tickwork dev: API at {url} (dashboard at {url}/ui)", flush=True)
    print(f"tickwork dev: database {engine.url.render_as_string(hide_password=True)}", flush=True)
    print(f"tickwork dev: admin token: {token}", flush=True)
    print(f"TICKWORK_URL={url}", flush=True)
    print(f"TICKWORK_TOKEN={token}", flush=True)
    config = uvicorn.Config(parts.app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    # uvicorn re-raises the SIGTERM it handled once it has stopped; with the default handler
    # that kills the process before the scheduler and worker below are stopped.
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        stopper = threading.Thread(target=parts.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=10)
        engine.dispose()
        signal.signal(signal.SIGTERM, previous)
        sys.stdout.flush()
    return 0
