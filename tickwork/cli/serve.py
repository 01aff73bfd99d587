"""``tickwork api`` (the REST API alone) and ``tickwork dev`` (everything in one process)."""

from __future__ import annotations

import argparse
from typing import Any

from tickwork.cli.common import migrated_engine, settings_and_logging


def register(sub: Any) -> None:
    api = sub.add_parser("api", help="serve the REST API (distributed mode)")
    api.add_argument("--host", help="default TICKWORK_API_HOST")
    api.add_argument("--port", type=int, help="default TICKWORK_API_PORT")
    api.set_defaults(func=cmd_api)
    dev = sub.add_parser("dev", help="API, scheduler and worker in one process (embedded mode)")
    dev.add_argument("--host", help="default TICKWORK_API_HOST")
    dev.add_argument("--port", type=int, help="default TICKWORK_API_PORT (0 picks a free port)")
    dev.add_argument("--migrate", action="store_true", help="apply migrations first (`tickwork db upgrade`)")
    dev.set_defaults(func=cmd_dev)


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from tickwork.api import create_app

    settings = settings_and_logging()
    engine = migrated_engine(settings)
    app = create_app(settings, engine=engine)
    uvicorn.run(
        app,
        host=args.host or settings.api_host,
        port=settings.api_port if args.port is None else args.port,
        log_config=None,
        access_log=False,
    )
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from tickwork.embedded import run_embedded

    settings = settings_and_logging()
    status: int = run_embedded(
        settings,
        host=args.host or settings.api_host,
        port=settings.api_port if args.port is None else args.port,
        migrate=args.migrate,
    )
    return status
