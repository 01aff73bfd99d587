"""Refuse query parameters a route does not declare: ``GET /jobs?tags=x`` (for ``tag``) is a 422
naming the parameter, not a silently unfiltered list."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

#: Routes answered to browsers rather than API clients: a stray ``?`` there harms nothing.
EXEMPT_PREFIXES = ("/ui",)

_declared: dict[int, frozenset[str]] = {}


def _names(route: APIRoute) -> frozenset[str]:
    names = _declared.get(id(route))
    if names is None:
        names = frozenset(_query_names(route.dependant))
        _declared[id(route)] = names
    return names


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters of a route and of every dependency it has (its own attributes only:
    FastAPI's flattening helpers are private and change between releases)."""
    names: set[str] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        names.update(param.alias for param in current.query_params)
        stack.extend(current.dependencies)
    return names


async def reject_unknown_query(request: Request) -> None:
    """An app-wide dependency: 422 for every query parameter the matched route does not read."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.path.startswith(EXEMPT_PREFIXES):
        return
    allowed = _names(route)
    unknown = sorted({name for name in request.query_params if name not in allowed})
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": f"unknown query parameter (this endpoint takes: {expected})",
                    "type": "value_error",
                }
                for name in unknown
            ]
        )
