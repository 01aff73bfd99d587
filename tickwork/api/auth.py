"""JWT bearer tokens: ``admin`` may write, ``viewer`` may read.

Tokens are signed with ``Settings.auth_secret`` (HS256 by default) and carry ``sub``, ``role``,
``iat`` and ``exp``. A missing, malformed, badly signed or expired token is 401; a valid
``viewer`` token on a write is 403.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tickwork.config import Settings
from tickwork.errors import ValidationError


class Role(enum.StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"


@dataclass(frozen=True)
class Principal:
    """Who made a request."""

    subject: str
    role: Role


def create_token(
    settings: Settings, role: Role | str, *, ttl_seconds: int | None = None, subject: str = "tickwork"
) -> str:
    """A signed token for ``role`` valid ``ttl_seconds`` (default ``settings.token_ttl_seconds``)."""
    try:
        role = Role(role)
    except ValueError:
        raise ValidationError("role", f"must be one of {', '.join(r.value for r in Role)}") from None
    ttl = settings.token_ttl_seconds if ttl_seconds is None else ttl_seconds
    if ttl <= 0:
        raise ValidationError("ttl", "must be a positive number of seconds")
    now = int(time.time())
    claims = {"sub": subject, "role": role.value, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, settings.auth_secret, algorithm=settings.auth_algorithm)


def decode_token(settings: Settings, token: str) -> Principal:
    """Verify a token; raises ``jwt.InvalidTokenError`` (expired, bad signature, bad claims)."""
    claims: dict[str, Any] = jwt.decode(
        token,
        settings.auth_secret,
        algorithms=[settings.auth_algorithm],
        options={"require": ["exp", "role"]},
    )
    try:
        role = Role(claims["role"])
    except ValueError:
        raise jwt.InvalidTokenError("unknown role") from None
    return Principal(subject=str(claims.get("sub", "")), role=role)


bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    bearerFormat="JWT",
    description="`tickwork token --role admin|viewer` prints a token.",
)


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=reason,
        headers={"WWW-Authenticate": "Bearer"},
    )


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """Any valid token (``viewer`` or ``admin``): reading."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token")
    settings: Settings = request.app.state.tickwork.settings
    try:
        return decode_token(settings, credentials.credentials)
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None


def require_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """An ``admin`` token: writing."""
    if principal.role != Role.ADMIN:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="admin role required")
    return principal


Reader = Annotated[Principal, Depends(current_principal)]
Writer = Annotated[Principal, Depends(require_admin)]
