"""Errors in the v2 shape {"success": false, "error": "..."}; dependency outages become 503, never 500."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import asyncpg
import nats
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

from libs.events.bus import CommandNotAccepted

log = structlog.get_logger()
RETRY_AFTER_S = "2"


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


def error_body(message: str, field: str | None = None) -> dict:
    body: dict = {"success": False, "error": message}
    if field:
        body["field"] = field
    return body


def plain_error_body(status: int, message: str, field: str | None = None) -> dict:
    """The console and assistant contracts' shape: {"error": "<type>", "message": "<detail>"}."""
    body: dict = {"error": HTTPStatus(status).phrase, "message": message}
    if field:
        body["field"] = field
    return body


def plain_api_error_handler(_: Request, exc: ApiError) -> Response:
    return Response(plain_error_body(exc.status, exc.message, exc.field), status_code=exc.status, headers=exc.headers)


def plain_http_exception_handler(_: Request, exc: HTTPException) -> Response:
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else "Request failed"
    return Response(plain_error_body(exc.status_code, message), status_code=exc.status_code,
                    headers=exc.headers or None)


PLAIN_EXCEPTION_HANDLERS = {ApiError: plain_api_error_handler, HTTPException: plain_http_exception_handler}


def api_error_handler(_: Request, exc: ApiError) -> Response:
    return Response(error_body(exc.message, exc.field), status_code=exc.status, headers=exc.headers)


def http_exception_handler(_: Request, exc: HTTPException) -> Response:
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else "Request failed"
    if exc.status_code == 413:
        message = "Request body is too large"
    return Response(error_body(message), status_code=exc.status_code, headers=exc.headers or None)


UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection the server dropped mid-operation (Postgres restarting)
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    nats.errors.Error,
    CommandNotAccepted,
)


def unavailable_handler(_: Request, exc: Exception) -> Response:
    log.warning("dependency_unavailable", error=f"{type(exc).__name__}: {exc}")
    return Response(
        error_body("Service temporarily unavailable; retry shortly"),
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_S},
    )


def unexpected_handler(_: Request, exc: Exception) -> Response:
    if isinstance(exc, UNAVAILABLE):
        return unavailable_handler(_, exc)
    log.exception("unhandled_error", error=str(exc))
    return Response(error_body("Internal server error"), status_code=500)


EXCEPTION_HANDLERS = {
    ApiError: api_error_handler,
    HTTPException: http_exception_handler,
    **{exc: unavailable_handler for exc in UNAVAILABLE},
    Exception: unexpected_handler,
}
