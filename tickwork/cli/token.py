"""``tickwork token --role admin|viewer``: print an API bearer token."""

from __future__ import annotations

import argparse
from typing import Any

from tickwork.cli.common import settings_and_logging


def register(sub: Any) -> None:
    token = sub.add_parser("token", help="print an API bearer token (JWT)")
    token.add_argument("--role", default="viewer", choices=["admin", "viewer"])
    token.add_argument("--ttl", type=int, metavar="SECONDS", help="default TICKWORK_TOKEN_TTL_SECONDS")
    token.add_argument("--subject", default="cli", help="who the token is for (the `sub` claim)")
    token.set_defaults(func=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    from tickwork.api.auth import create_token  # FastAPI is imported only by commands that need it

    settings = settings_and_logging()
    print(create_token(settings, args.role, ttl_seconds=args.ttl, subject=args.subject))
    return 0
