"""The response envelope of contract §3 and the errors that produce it.

Every body is ``{"success": bool, "data": …, "message": str?, "error": str?}``. Handlers
below turn every failure, including malformed input and an unreachable database, into that
shape with the right status: bad input is never a 500.
"""

from __future__ import annotations

import logging
from typing import Any, Generic, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    success: bool = True
    data: T
    message: str | None = None
    error: str | None = None


class ApiError(Exception):
    """An error answer: ``status`` and a message a person can act on."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.headers = headers


def invalid(field: str, problem: str) -> ApiError:
    """A 422 naming the field, in the same form as the schema validation errors."""
    return ApiError(422, f"{field}: {problem}")


def error_response(status: int, error: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"success": False, "data": None, "error": error}
    return JSONResponse(body, status_code=status, headers=headers)


_LOCATION_PREFIXES = {"body", "query", "path", "header", "cookie"}


def _describe_validation(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        location = [str(p) for p in error.get("loc", ())]
        if location and location[0] in _LOCATION_PREFIXES:
            location = location[1:]
        field = ".".join(location) or "body"
        if error.get("type") == "json_invalid":
            field = "body"
        # The message only: pydantic's error also carries the input, which may be a password.
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        problems.append(f"{field}: {message}")
    return "; ".join(problems)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's answer to a body it could not decode
            return error_response(422, "body: is not valid JSON (or not UTF-8, or too deep)")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, str(exc.detail), headers)

    @app.exception_handler(IntegrityError)
    async def _conflict(_: Request, exc: IntegrityError) -> JSONResponse:
        # Routes check the conflicts they expect; this catches a race with another request
        # (e.g. the owner deleted while a monitor was being added).
        return error_response(409, "the change conflicts with the current data; reload and retry")

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    @app.exception_handler(OSError)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", extra={"path": request.url.path, "error": str(exc)})
        return error_response(503, "the database is unavailable; try again shortly")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(500, "internal error")


def ok(data: Any, message: str | None = None) -> dict[str, Any]:
    return {"success": True, "data": data, "message": message}
