"""Error responses: 422 names the field and the reason, 404, 409; never a 500 for bad input."""

from __future__ import annotations

import logging
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tickwork.errors import Conflict, NotFound, PreconditionFailed, ValidationError
from tickwork.field_errors import field_errors
from tickwork.spec import escape_surrogates

log = logging.getLogger(__name__)


def validation_response(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": _encodable(errors)})


def _encodable(value: Any) -> Any:
    """The errors with lone surrogates escaped (``\\udc00``): a field name taken from an object
    key of the input may hold one, and UTF-8 cannot encode it (the answer would be a 500)."""
    if isinstance(value, str):
        return escape_surrogates(value)
    if isinstance(value, list | tuple):
        return [_encodable(item) for item in value]
    if isinstance(value, dict):
        return {_encodable(key): _encodable(item) for key, item in value.items()}
    return value


def invalid(field: str, reason: str, location: str = "body") -> JSONResponse:
    return validation_response(
        [{"field": field, "reason": reason, "loc": [location, field], "msg": reason, "type": "value_error"}]
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(field_errors(exc.errors()))

    @app.exception_handler(pydantic.ValidationError)
    async def _model_validation(_request: Request, exc: pydantic.ValidationError) -> JSONResponse:
        return validation_response(field_errors([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:
            # FastAPI answers 400 to a body it cannot decode (not UTF-8, not JSON): bad input, 422.
            return invalid("body", f"cannot be parsed: {exc.detail}")
        return await http_exception_handler(request, exc)

    @app.exception_handler(ValidationError)
    async def _tickwork_validation(_request: Request, exc: ValidationError) -> JSONResponse:
        return invalid(exc.field, exc.reason)

    @app.exception_handler(OverflowError)
    async def _overflow(_request: Request, exc: OverflowError) -> JSONResponse:
        # Dates and numbers past what Python or the database represent come from the input.
        return invalid("body", f"a value is out of range: {exc}")

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(PreconditionFailed)
    async def _precondition(_request: Request, exc: PreconditionFailed) -> JSONResponse:
        headers = {} if exc.version is None else {"ETag": f'"{exc.version}"'}
        return JSONResponse(status_code=412, content={"detail": str(exc)}, headers=headers)

    @app.exception_handler(Conflict)
    async def _conflict(_request: Request, exc: Conflict) -> JSONResponse:
        content = {"detail": str(exc)} if exc.field is None else {"detail": str(exc), "field": exc.field}
        return JSONResponse(status_code=409, content=content)
