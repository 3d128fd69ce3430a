"""The public API's error shape (spec D): {"message": ..., "error": "<HTTP phrase>", "statusCode": N}."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from services.gateway.core.errors import WORKFLOW_NOT_ACTIVE
from services.gateway.errors import RETRY_AFTER_S, UNAVAILABLE, ApiError, http_error, responses, validation_error

log = structlog.get_logger()
PREFIX = "/api/v1/public"


class PublicError(msgspec.Struct, kw_only=True, omit_defaults=True):
    """D's error body."""

    message: str
    error: str
    statusCode: int  # noqa: N815 - the contract's field name
    retryAfter: int | None = None  # noqa: N815 - with 429


def public_responses(*codes: int):
    """A public route's refusals in D's shape: the key middleware can answer 401, 403 and 429 on any route."""
    return responses(PublicError, 401, 403, 404, 429, *codes)


class PublicApiError(Exception):
    """Raise in a public route; rendered as D's body. `error` defaults to the status's phrase."""

    def __init__(self, status: int, message: str, error: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.error, self.headers = status, message, error, headers or {}


def body(status: int, message: str, error: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"message": message, "error": error or HTTPStatus(status).phrase, "statusCode": status, **extra}


def encoded(status: int, message: str, **extra: Any) -> bytes:
    """The body as bytes, for the middleware that answers before any route runs."""
    return msgspec.json.encode(body(status, message, **extra))


def public_error_handler(_: Request, exc: PublicApiError) -> Response:
    return Response(body(exc.status, exc.message, exc.error), status_code=exc.status, headers=exc.headers or None)


def api_error_handler(_: Request, exc: ApiError) -> Response:
    """Shared gateway helpers (inputs validation, the dispatcher) raise ApiError: same meaning, D's shape.
    The field it names goes into the message, D's shape has no slot for it. D says an inactive workflow is a
    403 "Workflow is inactive"."""
    if exc.code == WORKFLOW_NOT_ACTIVE:
        return Response(body(403, "Workflow is inactive"), status_code=403)
    message = exc.message if not exc.field or exc.field in exc.message else f"{exc.message} ({exc.field})"
    return Response(body(exc.status, message), status_code=exc.status, headers=exc.headers or None)


def http_exception_handler(_: Request, exc: HTTPException) -> Response:
    if isinstance(exc, ValidationException):
        refused = validation_error(exc)
        message = refused.message if not refused.field or refused.field in refused.message \
            else f"{refused.message} ({refused.field})"
        return Response(body(400, message), status_code=400)
    message = http_error(exc).message if exc.detail else HTTPStatus(exc.status_code).phrase
    return Response(body(exc.status_code, message), status_code=exc.status_code, headers=exc.headers or None)


def unavailable_handler(_: Request, exc: Exception) -> Response:
    log.warning("dependency_unavailable", error=f"{type(exc).__name__}: {exc}")
    return Response(body(503, "Service temporarily unavailable; retry shortly"), status_code=503,
                    headers={"Retry-After": RETRY_AFTER_S})


def unexpected_handler(request: Request, exc: Exception) -> Response:
    if isinstance(exc, UNAVAILABLE):
        return unavailable_handler(request, exc)
    log.exception("unhandled_error", error=str(exc))
    return Response(body(500, "Internal server error"), status_code=500)


EXCEPTION_HANDLERS = {
    PublicApiError: public_error_handler,
    ApiError: api_error_handler,
    HTTPException: http_exception_handler,
    **{exc: unavailable_handler for exc in UNAVAILABLE},
    Exception: unexpected_handler,
}


def with_public_routing_errors(handlers: Mapping[Any, Any]) -> dict[Any, Any]:
    """The app's handlers, except that routing errors (404 no such path, 405 wrong method) under
    /api/v1/public come in D's shape: no public route ran, so the router's own handlers never see them."""
    app_handler = handlers[HTTPException]

    def routing_aware(request: Request, exc: HTTPException) -> Response:
        if request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/"):
            if exc.status_code == 404:
                return Response(body(404, f"Cannot {request.method} {request.url.path}"), status_code=404)
            return http_exception_handler(request, exc)
        return app_handler(request, exc)

    return {**handlers, HTTPException: routing_aware}
