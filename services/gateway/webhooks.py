"""Webhook admin API for the tenant (user JWT), in the v2 style: endpoints (list, create, get, enable or
disable, delete) and their delivery log (deliveries with every attempt; replay of a dead-lettered one).

    /api/v2/webhooks                              GET, POST
    /api/v2/webhooks/{id}                         GET, PATCH {"enabled"}, DELETE
    /api/v2/webhooks/deliveries                   GET ?webhook_id=&status=&execution_id=&limit=&offset=
    /api/v2/webhooks/deliveries/{id}              GET (with payload)
    /api/v2/webhooks/deliveries/{id}/replay       POST (202; dead-lettered deliveries only)
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, Router, delete, get, patch, post
from litestar.di import Provide

from libs.adapters.outbound import OutboundError, check_destination
from libs.security.auth import Principal
from libs.events.timers import set_timers
from libs.adapters.webhooks import (
    EVENTS,
    InvalidEndpoint,
    attempt_timer,
    create_endpoint,
    generate_secret,
    standard_secret,
    validate_endpoint,
)
from services.gateway.auth import authenticate
from services.gateway.bodies import decode_body
from services.gateway.errors import ApiError
from services.gateway.queries import iso
from services.gateway.v2.common import _int_param, _uuid

DELIVERY_STATUSES = ("pending", "delivered", "dead", "cancelled")
_ENDPOINT_COLUMNS = ("id, api_key_id, url, events, owner_email, enabled, consecutive_failures, disabled_at,"
                     " disabled_reason, created_at")
_DELIVERY_COLUMNS = ("d.id, d.endpoint_id, d.event_id, d.event, d.execution_id, d.status, d.attempts, d.next_attempt_at,"
                     " d.last_error, d.created_at, d.delivered_at, l.reason AS dead_reason, l.dead_at, l.replayed_at,"
                     " l.replays")
_DELIVERY_FROM = " FROM webhook_deliveries d LEFT JOIN webhook_dead_letters l ON l.delivery_id = d.id"


class CreateWebhookBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str
    events: list[str] = msgspec.field(default_factory=lambda: list(EVENTS))
    secret: str | None = None  # generated (and shown once) when absent
    api_key_id: uuid.UUID | None = None
    owner_email: str | None = None


class PatchWebhookBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool


def endpoint_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "api_key_id": str(row["api_key_id"]) if row["api_key_id"] else None,
        "url": row["url"],
        "events": list(row["events"]),
        "enabled": row["enabled"],
        "owner_email": row["owner_email"],
        "consecutive_failures": row["consecutive_failures"],
        "disabled_at": iso(row["disabled_at"]),
        "disabled_reason": row["disabled_reason"],
        "created_at": iso(row["created_at"]),
    }


def attempt_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"attempt": row["attempt"], "started_at": iso(row["started_at"]), "status_code": row["status_code"],
            "latency_ms": row["latency_ms"], "error": row["error"], "response_body": row["response_body"]}


def delivery_json(row: asyncpg.Record, attempts: list[asyncpg.Record]) -> dict[str, Any]:
    dead = None
    if row["dead_at"] is not None:
        dead = {"reason": row["dead_reason"], "dead_at": iso(row["dead_at"]), "replayed_at": iso(row["replayed_at"]),
                "replays": row["replays"]}
    return {
        "id": str(row["id"]),  # the webhook-id header of every attempt
        "webhook_id": str(row["endpoint_id"]),
        "event": row["event"],
        "event_id": str(row["event_id"]),
        "execution_id": str(row["execution_id"]),
        "status": row["status"],
        "attempt_count": row["attempts"],
        "next_attempt_at": iso(row["next_attempt_at"]),
        "last_error": row["last_error"],
        "created_at": iso(row["created_at"]),
        "delivered_at": iso(row["delivered_at"]),
        "dead_letter": dead,
        "attempts": [attempt_json(a) for a in attempts],
    }


def _store(request: Request):
    return request.app.state.ctx.store


async def _endpoint_or_404(conn: asyncpg.Connection, webhook_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1",
                              _uuid(webhook_id, "Webhook"))
    if row is None:
        raise ApiError(404, "Webhook not found")
    return row


async def _deliveries_json(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    attempts = await conn.fetch(
        "SELECT delivery_id, attempt, started_at, status_code, latency_ms, error, response_body FROM webhook_attempts"
        " WHERE delivery_id = ANY($1::uuid[]) ORDER BY delivery_id, attempt", [r["id"] for r in rows])
    by_delivery: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for a in attempts:
        by_delivery.setdefault(a["delivery_id"], []).append(a)
    return [delivery_json(r, by_delivery.get(r["id"], [])) for r in rows]


@get("/")
async def list_webhooks(request: Request, principal: Principal) -> dict[str, Any]:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id")
    return {"success": True, "webhooks": [endpoint_json(r) for r in rows], "count": len(rows)}


@post("/")
async def create_webhook(request: Request, principal: Principal) -> Response:
    body = decode_body(await request.body(), CreateWebhookBody)
    secret = body.secret if body.secret is not None else generate_secret()
    try:
        validate_endpoint(body.url, body.events, secret, body.owner_email)
    except InvalidEndpoint as exc:
        raise ApiError(400, str(exc), exc.field) from exc
    # Loopback, private and metadata addresses are refused now (the guard checks again on every attempt).
    try:
        async with asyncio.timeout(3.0):  # the resolver's bound here
            await check_destination(request.app.state.settings, body.url)
    except OutboundError as exc:
        raise ApiError(400, f"url is not allowed: {exc}", "url") from None
    except TimeoutError:
        pass  # a slow resolver decides nothing here; the attempts check again
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        if body.api_key_id is not None and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE id = $1)", body.api_key_id):
            raise ApiError(400, "api_key_id names no API key of this tenant", "api_key_id")
        endpoint_id = await create_endpoint(conn, tenant_id=principal.tenant_id, url=body.url, events=body.events,
                                            secret=secret, api_key_id=body.api_key_id, owner_email=body.owner_email)
        row = await conn.fetchrow(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1", endpoint_id)
    # The secret is shown here only; later reads never return it.
    webhook = {**endpoint_json(row), "secret": secret, "standard_webhooks_secret": standard_secret(secret)}
    return Response({"success": True, "webhook": webhook}, status_code=201)


@get("/deliveries")
async def list_deliveries(request: Request, principal: Principal) -> dict[str, Any]:
    params = request.query_params
    status = params.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise ApiError(400, f"status must be one of: {', '.join(DELIVERY_STATUSES)}", "status")
    filters = {name: _uuid_param(params.get(name), name) for name in ("webhook_id", "execution_id")}
    limit = _int_param(request, "limit", 50, 1, 500)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    where = (" WHERE ($1::text IS NULL OR d.status = $1) AND ($2::uuid IS NULL OR d.endpoint_id = $2)"
             " AND ($3::uuid IS NULL OR d.execution_id = $3)")
    args = (status, filters["webhook_id"], filters["execution_id"])
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(f"SELECT {_DELIVERY_COLUMNS}{_DELIVERY_FROM}{where}"
                                " ORDER BY d.created_at DESC, d.id LIMIT $4 OFFSET $5", *args, limit, offset)
        total = await conn.fetchval(f"SELECT count(*) FROM webhook_deliveries d{where}", *args)
        deliveries = await _deliveries_json(conn, rows)
    return {"success": True, "deliveries": deliveries, "count": total}


def _uuid_param(raw: str | None, name: str) -> uuid.UUID | None:
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a UUID", name) from None


async def _delivery_or_404(conn: asyncpg.Connection, delivery_id: str, *, lock: bool = False) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {_DELIVERY_COLUMNS}, d.payload{_DELIVERY_FROM} WHERE d.id = $1"
                              + (" FOR UPDATE OF d" if lock else ""), _uuid(delivery_id, "Delivery"))
    if row is None:
        raise ApiError(404, "Delivery not found")
    return row


@get("/deliveries/{delivery_id:str}")
async def get_delivery(request: Request, principal: Principal, delivery_id: str) -> dict[str, Any]:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await _delivery_or_404(conn, delivery_id)
        (delivery,) = await _deliveries_json(conn, [row])
    return {"success": True, "delivery": {**delivery, "payload": msgspec.json.decode(row["payload"])}}


@post("/deliveries/{delivery_id:str}/replay", status_code=202)
async def replay_delivery(request: Request, principal: Principal, delivery_id: str) -> dict[str, Any]:
    """Start a new round of attempts (1 + retries) with the same webhook-id, through a timer due now."""
    now = datetime.now(UTC)
    tenant_id = principal.tenant_id
    async with _store(request).tenant_transaction(tenant_id) as conn:
        row = await _delivery_or_404(conn, delivery_id, lock=True)
        if row["status"] != "dead":
            raise ApiError(409, f"Only a dead-lettered delivery can be replayed; this one is {row['status']}", "status")
        enabled = await conn.fetchval("SELECT enabled FROM webhook_endpoints WHERE id = $1", row["endpoint_id"])
        if enabled is None:
            raise ApiError(409, "The delivery's webhook was deleted")
        if not enabled:
            raise ApiError(409, "The delivery's webhook is disabled; enable it first (PATCH {\"enabled\": true})")
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'pending', round_start = attempts, next_attempt_at = $2,"
            " updated_at = $2 WHERE id = $1", row["id"], now)
        await conn.execute("UPDATE webhook_dead_letters SET replayed_at = $2, replays = replays + 1"
                           " WHERE delivery_id = $1", row["id"], now)
        await set_timers(conn, tenant_id, [attempt_timer(tenant_id, row["id"], row["attempts"] + 1, now)])
        row = await _delivery_or_404(conn, delivery_id)
        (delivery,) = await _deliveries_json(conn, [row])
    return {"success": True, "delivery": delivery}


@get("/{webhook_id:str}")
async def get_webhook(request: Request, principal: Principal, webhook_id: str) -> dict[str, Any]:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await _endpoint_or_404(conn, webhook_id)
    return {"success": True, "webhook": endpoint_json(row)}


@patch("/{webhook_id:str}")
async def patch_webhook(request: Request, principal: Principal, webhook_id: str) -> dict[str, Any]:
    """Enable (clearing the failure count) or disable an endpoint. Dead letters stay; replay them."""
    body = decode_body(await request.body(), PatchWebhookBody)
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await _endpoint_or_404(conn, webhook_id)
        if body.enabled:
            await conn.execute(
                "UPDATE webhook_endpoints SET enabled = true, consecutive_failures = 0, disabled_at = NULL,"
                " disabled_reason = NULL, owner_notified_at = NULL WHERE id = $1", row["id"])
        elif row["enabled"]:
            await conn.execute(
                "UPDATE webhook_endpoints SET enabled = false, disabled_at = $2, disabled_reason = $3,"
                " owner_notified_at = $2 WHERE id = $1",  # no mail: the owner did it
                row["id"], datetime.now(UTC), f"disabled by {principal.user_id}")
        row = await _endpoint_or_404(conn, webhook_id)
    return {"success": True, "webhook": endpoint_json(row)}


@delete("/{webhook_id:str}", status_code=200)
async def delete_webhook(request: Request, principal: Principal, webhook_id: str) -> dict[str, Any]:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await _endpoint_or_404(conn, webhook_id)
        await conn.execute("DELETE FROM webhook_endpoints WHERE id = $1", row["id"])
        # Pending deliveries end here; their timers find them cancelled and do nothing.
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'cancelled', last_error = 'endpoint deleted', next_attempt_at = NULL,"
            " updated_at = clock_timestamp() WHERE endpoint_id = $1 AND status = 'pending'", row["id"])
    return {"success": True, "message": "Webhook deleted successfully"}


router = Router(
    path="/api/v2/webhooks",
    route_handlers=[list_webhooks, create_webhook, list_deliveries, get_delivery, replay_delivery, get_webhook,
                    patch_webhook, delete_webhook],
    dependencies={"principal": Provide(authenticate)},
)

__all__ = ["router"]
