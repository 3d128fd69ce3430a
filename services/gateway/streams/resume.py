"""Where a stream starts: Last-Event-ID, or ?lastEventId= for clients that cannot set headers."""

from __future__ import annotations

from typing import Any

from services.gateway.errors import ApiError

_MAX_POSITION = 2**63 - 1


def last_event_id(headers: Any, query: Any) -> int:
    """The resume point: Last-Event-ID (EventSource's reconnect header) wins over ?lastEventId=; 0 = from the start."""
    raw = headers.get("last-event-id")
    name = "Last-Event-ID"
    if raw is None or not raw.strip():
        raw, name = query.get("lastEventId"), "lastEventId"
    if raw is None or not raw.strip():
        return 0
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(400, f"{name} must be a non-negative integer (an event id)", name) from None
    if not 0 <= value <= _MAX_POSITION:
        raise ApiError(400, f"{name} must be a non-negative integer (an event id)", name)
    return value
