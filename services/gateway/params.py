"""Query parameters read by hand, for routes not yet typed: an integer in bounds, or a 400 naming it."""

from __future__ import annotations

from litestar import Request

from services.gateway.core.errors import ApiError


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", name) from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}", name)
    return value
