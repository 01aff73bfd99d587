"""``tickwork api`` (the REST API alone) and ``tickwork dev`` (everything in one process)."""

from __future__ import annotations

import argparse
from typing import Any

from tickwork.cli.common import PORT, migrated_engine, settings_and_logging
from tickwork.config.settings import resolve_auth_secret


def register(sub: Any) -> None:
    api = sub.add_parser("api", help="serve the REST API (distributed mode)")
    api.add_argument("--host", help="default TICKWORK_API_HOST")
    api.add_argument("--port", type=PORT, help="default TICKWORK_API_PORT")
    api.set_defaults(func=cmd_api)
    dev = sub.add_parser("dev", help="API, scheduler and worker in one process (embedded mode)")
    dev.add_argument("--host", help="default TICKWORK_API_HOST")
    dev.add_argument("--port", type=PORT, help="default TICKWORK_API_PORT (0 picks a free port)")
    dev.add_argument(
        "--migrate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="apply migrations first (default: yes for a SQLite file, no for MySQL, which then "
        "must be at the newest revision)",
    )
    dev.set_defaults(func=cmd_dev)


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from tickwork.api import create_app
    from tickwork.embedded import listen_socket

    # Refuses the built-in secret for a shared deployment before anything else.
    settings = resolve_auth_secret(settings_and_logging())
    engine = migrated_engine(settings)
    app = create_app(settings, engine=engine)
    host, port = args.host or settings.api_host, settings.api_port if args.port is None else args.port
    sock = listen_socket(host, port)  # a busy port exits 1 naming it, as `tickwork dev` does
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))
    server.run(sockets=[sock])
    return 0 if server.started else 1


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
