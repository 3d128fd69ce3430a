"""How surfaces render errors: each contract's shape, documented in OpenAPI, and dependency outages as 503.

The core raises ApiError (services/gateway/core/errors.py); a surface's handlers render it in the surface's shape
and, where the surface's contract uses another status for a rule, remap it by the error's `code`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import asyncpg
import msgspec
import nats
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.openapi import ResponseSpec

from libs.events.bus import CommandNotAccepted
from services.gateway.core.errors import ApiError

log = structlog.get_logger()
RETRY_AFTER_S = "2"
Shape = Callable[[int, str, str | None], dict[str, Any]]


class V2Error(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The v2 and executions contracts' error body."""

    success: bool = False
    error: str
    field: str | None = None


class PlainError(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The console and assistant contracts' error body: the HTTP phrase, then the detail."""

    error: str
    message: str
    field: str | None = None


class Accepted(msgspec.Struct, kw_only=True):
    """202: the command is accepted but its outcome is not committed yet; poll `location`."""

    success: bool
    status: str
    command_id: str
    message: str
    location: str


def error_body(message: str, field: str | None = None) -> dict:
    body: dict = {"success": False, "error": message}
    if field:
        body["field"] = field
    return body


def v2_shape(_: int, message: str, field: str | None = None) -> dict:
    return error_body(message, field)


def plain_error_body(status: int, message: str, field: str | None = None) -> dict:
    """The console and assistant contracts' shape: {"error": "<type>", "message": "<detail>"}."""
    body: dict = {"error": HTTPStatus(status).phrase, "message": message}
    if field:
        body["field"] = field
    return body


def validation_error(exc: ValidationException) -> ApiError:
    """Litestar's failed body or parameter parse as our 400 naming the field."""
    extra = exc.extra if isinstance(exc.extra, list) and exc.extra else [{}]
    first = extra[0] if isinstance(extra[0], dict) else {}
    message = str(first.get("message") or exc.detail)
    field = first.get("key")
    if field in (None, "data") and message.count("`") >= 2:  # "Object missing required field `name`"
        field = message.split("`")[1]
    source = getattr(first.get("source"), "value", first.get("source"))  # litestar gives a ParamType enum
    where = "request body" if source in (None, "body") else f"{source} parameter"
    return ApiError(400, f"Invalid {where}: {message}", field if field != "data" else None)


def http_error(exc: HTTPException) -> ApiError:
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else "Request failed"
    if exc.status_code == 413:
        message = "Request body is too large"
    elif isinstance(exc.__cause__, SerializationException):  # the body is not JSON at all
        message = f"Invalid JSON body: {message}"
    return ApiError(exc.status_code, message, headers=dict(exc.headers or {}))


def handlers(shape: Shape, remap: Mapping[str, int] | None = None) -> dict[Any, Any]:
    """Exception handlers that render every refusal in `shape`; `remap` gives this contract's status for a
    rule (by ApiError.code) where it differs from the canonical one."""
    remap = remap or {}

    def render(_: Request, exc: Exception) -> Response:
        if isinstance(exc, ValidationException):
            exc = validation_error(exc)
        elif isinstance(exc, HTTPException):
            exc = http_error(exc)
        assert isinstance(exc, ApiError)
        status = remap.get(exc.code or "", exc.status)
        return Response(shape(status, exc.message, exc.field), status_code=status, headers=exc.headers or None)

    return {ApiError: render, HTTPException: render}


def responses(shape: type[msgspec.Struct], *codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for a route's refusals, in its surface's shape; 401 and 503 are on every route."""
    specs = {code: ResponseSpec(data_container=shape, description=HTTPStatus(code).phrase, generate_examples=False)
             for code in sorted({400, 401, 503, *codes})}
    return specs


def accepted_response() -> dict[int, ResponseSpec]:
    return {202: ResponseSpec(data_container=Accepted, generate_examples=False,
                              description="Accepted; the outcome is not committed yet. Poll the Location.")}


EXCEPTION_HANDLERS_V2 = handlers(v2_shape)
PLAIN_EXCEPTION_HANDLERS = handlers(plain_error_body)


def api_error_handler(request: Request, exc: ApiError) -> Response:
    return EXCEPTION_HANDLERS_V2[ApiError](request, exc)


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    return EXCEPTION_HANDLERS_V2[HTTPException](request, exc)


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

__all__ = ["ApiError", "EXCEPTION_HANDLERS", "PLAIN_EXCEPTION_HANDLERS", "UNAVAILABLE", "error_body",
           "plain_error_body", "handlers", "responses"]
