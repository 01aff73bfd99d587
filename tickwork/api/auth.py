"""JWT bearer tokens: ``admin`` may write, ``viewer`` may read.

Tokens are signed with ``Settings.auth_secret`` (HS256 by default) and carry ``sub``, ``role``,
``iat`` and ``exp``. A missing, malformed, badly signed or expired token is 401, and so is one
without ``sub`` (printable text, at most 200 characters: it is written to the audit log), with a
non-numeric ``exp`` or with an unknown role; a valid ``viewer`` token on a write is 403. Without a
secret (settings not passed through ``resolve_auth_secret``) nothing is signed or verified.
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
from tickwork.errors import ConfigError, ValidationError

#: The longest ``sub`` claim accepted (``tickwork token --subject`` allows as much).
MAX_SUBJECT_LENGTH = 200


class Role(enum.StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"


@dataclass(frozen=True)
class Principal:
    """Who made a request."""

    subject: str
    role: Role

    @property
    def masked(self) -> bool:
        """True when credentials in job definitions are hidden from this reader (``viewer``)."""
        return self.role != Role.ADMIN


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
    if not _valid_subject(subject):
        raise ValidationError("subject", f"must be printable text of 1 to {MAX_SUBJECT_LENGTH} characters")
    now = int(time.time())
    claims = {"sub": subject, "role": role.value, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, _secret(settings), algorithm=settings.auth_algorithm)


def decode_token(settings: Settings, token: str) -> Principal:
    """Verify a token; raises ``jwt.InvalidTokenError`` (expired, bad signature, bad claims)."""
    if not settings.auth_secret:
        raise jwt.InvalidTokenError("no secret configured")
    claims: dict[str, Any] = jwt.decode(
        token,
        settings.auth_secret,
        algorithms=[settings.auth_algorithm],
        options={"require": ["exp", "role", "sub"]},
    )
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise jwt.InvalidTokenError("exp must be a number")
    subject = claims["sub"]
    if not isinstance(subject, str) or not _valid_subject(subject):
        raise jwt.InvalidTokenError(f"sub must be printable text of 1 to {MAX_SUBJECT_LENGTH} characters")
    try:
        role = Role(claims["role"])
    except (TypeError, ValueError):
        raise jwt.InvalidTokenError("unknown role") from None
    return Principal(subject=subject, role=role)


def _valid_subject(subject: str) -> bool:
    return 0 < len(subject) <= MAX_SUBJECT_LENGTH and subject.isprintable() and bool(subject.strip())


def _secret(settings: Settings) -> str:
    if not settings.auth_secret:
        raise ConfigError("TICKWORK_AUTH_SECRET", "no secret: pass the settings through resolve_auth_secret")
    return settings.auth_secret


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
