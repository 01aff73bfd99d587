"""``tickwork worker``: Dramatiq worker processes for the tickwork broker.

The command checks its input and the schema, then becomes ``python -m dramatiq tickwork.worker``
(same PID), so signals behave exactly as Dramatiq's: SIGTERM lets in-flight messages finish and
gives prefetched ones back to RabbitMQ; a second SIGTERM kills.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

from tickwork.actors.registry import import_job_modules
from tickwork.cli.common import migrated_engine
from tickwork.config import configure_logging, load_settings
from tickwork.errors import ValidationError
from tickwork.spec import QUEUE_RE

#: ``dramatiq_worker_timeout``: consumers wake this often (ms); delayed retries start at most this late.
WORKER_TIMEOUT_MS = 100
#: The longest ``--shutdown-timeout`` (a day): in-flight jobs get at most this long after SIGTERM.
MAX_SHUTDOWN_TIMEOUT = 86400.0


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="run worker processes that execute jobs")
    p.add_argument("--processes", "-p", type=int, default=os.cpu_count() or 1, help="worker processes")
    p.add_argument("--threads", "-t", type=int, default=8, help="worker threads per process")
    p.add_argument("--queues", "-Q", nargs="*", default=None, help="only consume these job queues")
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=600.0,
        help="seconds in-flight jobs get to finish after SIGTERM",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_worker)


def dramatiq_argv(args: argparse.Namespace, namespace: str) -> list[str]:
    """The ``python -m dramatiq`` command line this command becomes."""
    if args.processes < 1 or args.processes > 256:
        raise ValidationError("--processes", "must be between 1 and 256")
    if args.threads < 1 or args.threads > 1024:
        raise ValidationError("--threads", "must be between 1 and 1024")
    if not 0 < args.shutdown_timeout <= MAX_SHUTDOWN_TIMEOUT:  # also refuses nan
        raise ValidationError(
            "--shutdown-timeout", f"must be above 0 and at most {MAX_SHUTDOWN_TIMEOUT:g} seconds"
        )
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "tickwork.worker",
        "--processes",
        str(args.processes),
        "--threads",
        str(args.threads),
        "--worker-shutdown-timeout",
        str(int(args.shutdown_timeout * 1000)),
    ]
    if args.queues:
        for queue in args.queues:
            if not QUEUE_RE.fullmatch(queue):
                raise ValidationError("--queues", f"{queue!r} is not a queue name")
        argv += ["--queues", *(f"{namespace}.{q}" for q in args.queues)]
    if args.verbose:
        argv.append("--verbose")
    return argv


def cmd_worker(args: argparse.Namespace) -> int:
    settings = load_settings()
    argv = dramatiq_argv(args, settings.namespace)  # bad input exits 2 before anything starts
    configure_logging(settings.log_level, settings.log_format)
    import_job_modules(settings)  # a bad TICKWORK_IMPORTS names the variable, not a child traceback
    migrated_engine(settings).dispose()
    env = dict(os.environ)
    env.setdefault("dramatiq_worker_timeout", str(WORKER_TIMEOUT_MS))
    if settings.metrics_port:
        # prometheus-client's convention: worker processes write their samples here and the
        # one serving /metrics adds them up.
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tickwork-worker-metrics-"))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
    return 0  # not reached
