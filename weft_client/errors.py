"""Errors the client raises: every refusal carries the surface's HTTP status and message."""

from __future__ import annotations

from typing import Any


class WeftError(Exception):
    """Base of every client error."""


class TransportError(WeftError):
    """The gateway could not be reached, or the connection dropped before an answer (after any retries)."""


class ApiError(WeftError):
    """The gateway answered with a refusal. `status` is the HTTP status; `message` the surface's own words
    (v2's "error", the public API's "message"); `field` the request field it names, when it names one."""

    def __init__(self, status: int, message: str, field: str | None = None, *, body: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(f"{status}: {message}" + (f" ({field})" if field else ""))
        self.status, self.message, self.field, self.body = status, message, field, body
        self.headers = headers or {}


class BadRequest(ApiError):
    """400 or 422: the request breaks a rule (the message names it)."""


class Unauthorized(ApiError):
    """401: no valid token or API key."""


class Forbidden(ApiError):
    """403: valid credentials, but not for this."""


class NotFound(ApiError):
    """404: no such workflow, run, schedule or command for this tenant."""


class Conflict(ApiError):
    """409: the current state forbids it (a run is already active, the workflow is not active, ...)."""


class RateLimited(ApiError):
    """429: over the rate limit; `retry_after` is how many seconds the gateway asked to wait."""

    @property
    def retry_after(self) -> float | None:
        return retry_after_seconds(self.headers)


class Unavailable(ApiError):
    """503: the gateway could not accept the request (a dependency is down); retrying is safe with the same
    Idempotency-Key."""

    @property
    def retry_after(self) -> float | None:
        return retry_after_seconds(self.headers)


class CommandPending(WeftError):
    """A command was accepted (202) but its outcome did not commit before the client stopped polling.
    Poll `location` later (or call `Client.command(command_id)`)."""

    def __init__(self, command_id: str, location: str):
        super().__init__(f"command {command_id} is accepted but not committed yet; poll {location}")
        self.command_id, self.location = command_id, location


_BY_STATUS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                         409: Conflict, 422: BadRequest, 429: RateLimited, 503: Unavailable}


def error_for(status: int, message: str, field: str | None = None, *, body: Any = None,
              headers: dict[str, str] | None = None) -> ApiError:
    """The exception for a refusal with this status."""
    return _BY_STATUS.get(status, ApiError)(status, message, field, body=body, headers=headers)


def retry_after_seconds(headers: dict[str, str]) -> float | None:
    """Retry-After in seconds (the gateway sends whole seconds), or None when absent or not a number."""
    raw = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None
