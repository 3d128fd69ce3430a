"""Webhook use cases for the dashboard: endpoints, their delivery log, and replaying a dead letter.

Built on libs/adapters/webhooks.py (validation, creation, attempt timers) like the admin API
(services/gateway/webhooks.py), which keeps its own copy of the replay rule until it moves here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from libs.adapters.webhooks import EVENTS, InvalidEndpoint, attempt_timer, create_endpoint, generate_secret
from libs.adapters.webhooks import standard_secret, validate_endpoint
from libs.events.timers import set_timers
from libs.security.auth import Principal
from services.gateway.core import Core
from services.gateway.core.errors import ApiError, NotFound

STATUSES = ("pending", "delivered", "dead", "cancelled")
_ENDPOINTS = ("SELECT id, url, events, owner_email, enabled, consecutive_failures, disabled_reason, created_at"
              " FROM webhook_endpoints ORDER BY created_at, id")
_DELIVERIES = (
    "SELECT d.id, d.endpoint_id, e.url, d.event, d.execution_id, d.status, d.attempts, d.next_attempt_at,"
    " d.last_error, d.created_at, d.delivered_at, l.reason AS dead_reason, l.replays"
    " FROM webhook_deliveries d LEFT JOIN webhook_dead_letters l ON l.delivery_id = d.id"
    " LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id"
    " WHERE ($1::text IS NULL OR d.status = $1) ORDER BY d.created_at DESC, d.id LIMIT $2")


async def endpoints(core: Core, principal: Principal) -> list[asyncpg.Record]:
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return await conn.fetch(_ENDPOINTS)


async def create(core: Core, principal: Principal, url: str, events: list[str] | None = None,
                 owner_email: str | None = None) -> tuple[uuid.UUID, str, str]:
    """A tenant-wide endpoint with a generated secret; returns (id, secret, Standard Webhooks secret), shown once."""
    events = list(events) if events else list(EVENTS)
    secret = generate_secret()
    try:
        validate_endpoint(url, events, secret, owner_email)
    except InvalidEndpoint as exc:
        raise ApiError(400, str(exc), exc.field) from exc
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        endpoint_id = await create_endpoint(conn, tenant_id=principal.tenant_id, url=url, events=events,
                                            secret=secret, api_key_id=None, owner_email=owner_email)
    return endpoint_id, secret, standard_secret(secret)


async def deliveries(core: Core, principal: Principal, status: str | None = None, limit: int = 100
                     ) -> list[asyncpg.Record]:
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"status must be one of: {', '.join(STATUSES)}", "status")
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return await conn.fetch(_DELIVERIES, status, limit)


async def replay(core: Core, principal: Principal, delivery_id: uuid.UUID) -> dict[str, Any]:
    """A new round of attempts (1 + retries) with the same webhook-id, through a timer due now. Only a dead
    letter of an enabled endpoint is replayed (a live delivery is still being retried)."""
    at = datetime.now(UTC)
    tenant_id = principal.tenant_id
    async with core.store.tenant_transaction(tenant_id) as conn:
        row = await conn.fetchrow("SELECT id, endpoint_id, status, attempts FROM webhook_deliveries WHERE id = $1"
                                  " FOR UPDATE", delivery_id)
        if row is None:
            raise NotFound("Delivery")
        if row["status"] != "dead":
            raise ApiError(409, f"Only a dead-lettered delivery can be replayed; this one is {row['status']}",
                           "delivery")
        enabled = await conn.fetchval("SELECT enabled FROM webhook_endpoints WHERE id = $1", row["endpoint_id"])
        if not enabled:
            raise ApiError(409, "The delivery's webhook is deleted or disabled; enable it first", "delivery")
        await conn.execute("UPDATE webhook_deliveries SET status = 'pending', round_start = attempts,"
                           " next_attempt_at = $2, updated_at = $2 WHERE id = $1", row["id"], at)
        await conn.execute("UPDATE webhook_dead_letters SET replayed_at = $2, replays = replays + 1"
                           " WHERE delivery_id = $1", row["id"], at)
        await set_timers(conn, tenant_id, [attempt_timer(tenant_id, row["id"], row["attempts"] + 1, at)])
    return {"id": row["id"], "attempt": row["attempts"] + 1}
