"""pydantic's errors as ``(field, reason)`` pairs, the shape every entry point reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic.alias_generators import to_camel

from tickwork.errors import ValidationError

#: Where an input came from: the first element of a FastAPI ``loc``, not part of the field's name.
LOCATIONS = ("body", "query", "path", "header", "cookie")


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Turn pydantic/FastAPI error dicts into ``{"field", "reason", "loc", "msg", "type"}``."""
    out: list[dict[str, Any]] = []
    for err in errors:
        loc = [part if isinstance(part, int) else str(part) for part in err.get("loc", ())]
        if loc and loc[0] == "path":  # path parameters are named in snake_case in the routes
            loc = [loc[0], *(to_camel(p) if isinstance(p, str) else p for p in loc[1:])]
        names = [str(p) for i, p in enumerate(loc) if not (i == 0 and p in LOCATIONS)]
        field = ".".join(names) or (str(loc[0]) if loc else "body")
        reason = str(err.get("msg", "invalid"))
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ValidationError):
            field, reason = cause.field, cause.reason
            if not names:
                loc = [*loc[:1], field]
        else:
            reason = reason.removeprefix("Value error, ")
            prefix, sep, rest = reason.partition(": ")
            if sep and not names and prefix.isidentifier():
                # Model-level checks say "handlerData: must name ...".
                field, reason = prefix, rest
                loc = [*loc[:1], field]
        if err.get("type") == "json_invalid":
            field = "body"
        out.append(
            {
                "field": str(field),
                "reason": reason,
                "loc": loc,
                "msg": reason,
                "type": str(err.get("type", "")),
            }
        )
    return out


def first_error(errors: Sequence[Any]) -> ValidationError:
    """The first of pydantic's errors as a :class:`ValidationError` (CLI: exit 2)."""
    converted = field_errors(errors)
    if not converted:
        return ValidationError("input", "invalid")
    return ValidationError(converted[0]["field"], converted[0]["reason"])
