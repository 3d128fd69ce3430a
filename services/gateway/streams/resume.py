"""Where a stream starts (Last-Event-ID / ?lastEventId=) and whether what it covers exists for the tenant."""

from __future__ import annotations

import uuid
from typing import Any

from services.gateway import queries
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


async def workflow_exists(ctx: Any, tenant_id: str, workflow_id: uuid.UUID) -> bool:
    async with ctx.store.tenant_transaction(tenant_id) as conn:
        return await queries.get_workflow(conn, tenant_id, workflow_id) is not None


async def run_exists(ctx: Any, tenant_id: str, workflow_id: uuid.UUID, run_id: uuid.UUID) -> bool:
    async with ctx.store.tenant_transaction(tenant_id) as conn:
        return await queries.get_run(conn, tenant_id, workflow_id, run_id) is not None


def uuid_or_404(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, f"{what} not found") from None
