"""``tickwork scheduler``: run one scheduler node until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import re
import signal
import threading
from types import FrameType
from typing import Any

from tickwork.cli.common import migrated_engine, settings_and_logging


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "scheduler",
        help="run a scheduler node (any number may run; one leads)",
        description="Run a scheduler node until SIGTERM/SIGINT; the lease is released on exit.",
    )
    parser.add_argument(
        "--node-id",
        default=None,
        type=_node_id,
        help="this node's id: letters, digits and ._@:- (default: host-pid-random)",
    )
    parser.set_defaults(func=cmd_scheduler)


#: A node id goes into Redis keys, log fields and metric labels.
NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")


def _node_id(text: str) -> str:
    if not NODE_ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a node id: 1 to 128 letters, digits and ._@:- (starting with a letter or digit)"
        )
    return text


def cmd_scheduler(args: argparse.Namespace) -> int:
    from tickwork.actors.registry import import_job_modules, register_definitions
    from tickwork.heap import freeze_startup_heap
    from tickwork.scheduler.service import SchedulerService

    settings = settings_and_logging()
    engine = migrated_engine(settings)
    # @job definitions with a schedule fire even before any worker has started.
    import_job_modules(settings)
    register_definitions(engine)
    service = SchedulerService(settings, engine=engine, node_id=args.node_id)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if settings.metrics_port:
        from tickwork.metrics import start_metrics_server

        start_metrics_server(settings.metrics_port)
    service.start()
    freeze_startup_heap()
    print(f"tickwork scheduler {service.node_id} running", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        service.shutdown(release=True)
        engine.dispose()
    return 0
