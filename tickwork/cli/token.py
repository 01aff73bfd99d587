"""``tickwork token --role admin|viewer``: print an API bearer token."""

from __future__ import annotations

import argparse
from typing import Any

from tickwork.cli.common import int_range, settings_and_logging, text_arg
from tickwork.config.settings import resolve_auth_secret

#: The longest ``--ttl``: a token that outlives a year is a password nobody rotates.
MAX_TTL_SECONDS = 365 * 24 * 3600


def register(sub: Any) -> None:
    token = sub.add_parser("token", help="print an API bearer token (JWT)")
    token.add_argument("--role", default="viewer", choices=["admin", "viewer"])
    token.add_argument(
        "--ttl",
        type=int_range(1, MAX_TTL_SECONDS, "a number of seconds"),
        metavar="SECONDS",
        help="1 to 31536000 (a year); default TICKWORK_TOKEN_TTL_SECONDS",
    )
    token.add_argument(
        "--subject", default="cli", type=text_arg(200), help="who the token is for (the `sub` claim)"
    )
    token.set_defaults(func=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    from tickwork.api.auth import create_token  # FastAPI is imported only by commands that need it

    # The built-in secret is refused for a shared deployment; `tickwork dev`'s own on SQLite.
    # Read-only: the secret `tickwork dev` keeps next to its database, never a new one.
    settings = resolve_auth_secret(settings_and_logging(), create=False)
    print(create_token(settings, args.role, ttl_seconds=args.ttl, subject=args.subject))
    return 0
