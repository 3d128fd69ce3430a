"""Webhook admin API for the tenant (user JWT), in the v2 style: endpoints (list, create, get, enable or
disable, delete) and their delivery log (deliveries with every attempt; replay of a dead-lettered one).

    /api/v2/webhooks                              GET, POST
    /api/v2/webhooks/{id}                         GET, PATCH {"enabled"}, DELETE
    /api/v2/webhooks/deliveries                   GET ?webhook_id=&status=&execution_id=&limit=&offset=
    /api/v2/webhooks/deliveries/{id}              GET (with payload)
    /api/v2/webhooks/deliveries/{id}/replay       POST (202; dead-lettered deliveries only)
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Request, Router, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from libs.security.auth import Principal
from libs.adapters.webhooks import EVENTS
from services.gateway.shapes import Message, envelope
from services.gateway.auth import authenticate
from services.gateway.core import deliveries as deliveries_core
from services.gateway.core.errors import NotFound
from services.gateway.errors import EXCEPTION_HANDLERS_V2, V2Error, responses
from services.gateway.timestamps import iso

_ENDPOINT_COLUMNS = ("id, api_key_id, url, events, owner_email, enabled, consecutive_failures, disabled_at,"
                     " disabled_reason, created_at")
_DELIVERY_COLUMNS = ("d.id, d.endpoint_id, d.event_id, d.event, d.execution_id, d.status, d.attempts, d.next_attempt_at,"
                     " d.last_error, d.created_at, d.delivered_at, l.reason AS dead_reason, l.dead_at, l.replayed_at,"
                     " l.replays")
_DELIVERY_FROM = " FROM webhook_deliveries d LEFT JOIN webhook_dead_letters l ON l.delivery_id = d.id"


Short = Annotated[str, msgspec.Meta(max_length=2048)]


class CreateWebhookBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Short
    events: Annotated[list[Annotated[str, msgspec.Meta(max_length=100)]], msgspec.Meta(max_length=20)] = \
        msgspec.field(default_factory=lambda: list(EVENTS))
    secret: Short | None = None  # generated (and shown once) when absent
    api_key_id: uuid.UUID | None = None
    owner_email: Annotated[str, msgspec.Meta(max_length=320)] | None = None


class PatchWebhookBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool


class Endpoint(msgspec.Struct, kw_only=True):
    id: str
    api_key_id: str | None
    url: str
    events: list[str]
    enabled: bool
    owner_email: str | None
    consecutive_failures: int
    disabled_at: str | None
    disabled_reason: str | None
    created_at: str | None


class NewEndpoint(Endpoint, kw_only=True):
    secret: str  # shown here only; later reads never return it
    standard_webhooks_secret: str


class Attempt(msgspec.Struct, kw_only=True):
    attempt: int
    started_at: str | None
    status_code: int | None
    latency_ms: float | None
    error: str | None
    response_body: str | None


class DeadLetter(msgspec.Struct, kw_only=True):
    reason: str | None
    dead_at: str | None
    replayed_at: str | None
    replays: int


class Delivery(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str  # the webhook-id header of every attempt
    webhook_id: str
    event: str
    event_id: str
    execution_id: str
    status: str
    attempt_count: int
    next_attempt_at: str | None
    last_error: str | None
    created_at: str | None
    delivered_at: str | None
    dead_letter: DeadLetter | None
    attempts: list[Attempt]
    payload: Any = None


EndpointEnvelope = envelope("EndpointEnvelope", __name__, webhook=Endpoint)


NewEndpointEnvelope = envelope("NewEndpointEnvelope", __name__, webhook=NewEndpoint)


EndpointList = envelope("EndpointList", __name__, webhooks=list[Endpoint], count=int)


DeliveryEnvelope = envelope("DeliveryEnvelope", __name__, delivery=Delivery)


DeliveryList = envelope("DeliveryList", __name__, deliveries=list[Delivery], count=int)


def endpoint_json(row: asyncpg.Record) -> Endpoint:
    return Endpoint(id=str(row["id"]), api_key_id=str(row["api_key_id"]) if row["api_key_id"] else None,
                    url=row["url"], events=list(row["events"]), enabled=row["enabled"], owner_email=row["owner_email"],
                    consecutive_failures=row["consecutive_failures"], disabled_at=iso(row["disabled_at"]),
                    disabled_reason=row["disabled_reason"], created_at=iso(row["created_at"]))


def attempt_json(row: asyncpg.Record) -> Attempt:
    return Attempt(attempt=row["attempt"], started_at=iso(row["started_at"]), status_code=row["status_code"],
                   latency_ms=row["latency_ms"], error=row["error"], response_body=row["response_body"])


def delivery_json(row: asyncpg.Record, attempts: list[asyncpg.Record]) -> Delivery:
    dead = None
    if row["dead_at"] is not None:
        dead = DeadLetter(reason=row["dead_reason"], dead_at=iso(row["dead_at"]), replayed_at=iso(row["replayed_at"]),
                          replays=row["replays"])
    return Delivery(
        id=str(row["id"]), webhook_id=str(row["endpoint_id"]), event=row["event"], event_id=str(row["event_id"]),
        execution_id=str(row["execution_id"]), status=row["status"], attempt_count=row["attempts"],
        next_attempt_at=iso(row["next_attempt_at"]), last_error=row["last_error"], created_at=iso(row["created_at"]),
        delivered_at=iso(row["delivered_at"]), dead_letter=dead, attempts=[attempt_json(a) for a in attempts])


def _store(request: Request):
    return request.app.state.ctx.store


async def _endpoint_or_404(conn: asyncpg.Connection, webhook_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1", webhook_id)
    if row is None:
        raise NotFound("Webhook")
    return row


async def _deliveries_json(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Delivery]:
    attempts = await conn.fetch(
        "SELECT delivery_id, attempt, started_at, status_code, latency_ms, error, response_body FROM webhook_attempts"
        " WHERE delivery_id = ANY($1::uuid[]) ORDER BY delivery_id, attempt", [r["id"] for r in rows])
    by_delivery: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for a in attempts:
        by_delivery.setdefault(a["delivery_id"], []).append(a)
    return [delivery_json(r, by_delivery.get(r["id"], [])) for r in rows]


READ = responses(V2Error, 404, 429)


@get("/", responses=responses(V2Error, 429))
async def list_webhooks(request: Request, principal: NamedDependency[Principal]) -> EndpointList:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id")
    return EndpointList(success=True, webhooks=[endpoint_json(r) for r in rows], count=len(rows))


@post("/", status_code=201, responses=responses(V2Error, 429))
async def create_webhook(request: Request, principal: NamedDependency[Principal],
                         data: JSONBody[CreateWebhookBody]) -> NewEndpointEnvelope:
    endpoint_id, secret, standard = await deliveries_core.create(
        request.app.state.core, principal, data.url, data.events, data.owner_email, secret=data.secret,
        api_key_id=data.api_key_id)
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await conn.fetchrow(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1", endpoint_id)
    # The secret is shown here only; later reads never return it.
    webhook = NewEndpoint(**msgspec.structs.asdict(endpoint_json(row)), secret=secret,
                          standard_webhooks_secret=standard)
    return NewEndpointEnvelope(success=True, webhook=webhook)


@get("/deliveries", responses=responses(V2Error, 429))
async def list_deliveries(
    request: Request, principal: NamedDependency[Principal],
    status: FromQuery[Literal["pending", "delivered", "dead", "cancelled"] | None] = None,
    webhook_id: FromQuery[uuid.UUID | None] = None, execution_id: FromQuery[uuid.UUID | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0,
) -> DeliveryList:
    filters = {"webhook_id": webhook_id, "execution_id": execution_id}
    where = (" WHERE ($1::text IS NULL OR d.status = $1) AND ($2::uuid IS NULL OR d.endpoint_id = $2)"
             " AND ($3::uuid IS NULL OR d.execution_id = $3)")
    args = (status, filters["webhook_id"], filters["execution_id"])
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(f"SELECT {_DELIVERY_COLUMNS}{_DELIVERY_FROM}{where}"
                                " ORDER BY d.created_at DESC, d.id LIMIT $4 OFFSET $5", *args, limit, offset)
        total = await conn.fetchval(f"SELECT count(*) FROM webhook_deliveries d{where}", *args)
        deliveries = await _deliveries_json(conn, rows)
    return DeliveryList(success=True, deliveries=deliveries, count=total)


async def _delivery_or_404(conn: asyncpg.Connection, delivery_id: uuid.UUID, *, lock: bool = False
                           ) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {_DELIVERY_COLUMNS}, d.payload{_DELIVERY_FROM} WHERE d.id = $1"
                              + (" FOR UPDATE OF d" if lock else ""), delivery_id)
    if row is None:
        raise NotFound("Delivery")
    return row


@get("/deliveries/{delivery_id:uuid}", responses=READ)
async def get_delivery(request: Request, principal: NamedDependency[Principal],
                       delivery_id: FromPath[uuid.UUID]) -> DeliveryEnvelope:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await _delivery_or_404(conn, delivery_id)
        (delivery,) = await _deliveries_json(conn, [row])
    delivery.payload = msgspec.json.decode(row["payload"])
    return DeliveryEnvelope(success=True, delivery=delivery)


@post("/deliveries/{delivery_id:uuid}/replay", status_code=202, responses=responses(V2Error, 404, 409, 429))
async def replay_delivery(request: Request, principal: NamedDependency[Principal],
                          delivery_id: FromPath[uuid.UUID]) -> DeliveryEnvelope:
    """Start a new round of attempts (1 + retries) with the same webhook-id, through a timer due now."""
    core = request.app.state.core
    await deliveries_core.replay(core, principal, delivery_id)
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await _delivery_or_404(conn, delivery_id)
        (delivery,) = await _deliveries_json(conn, [row])
    return DeliveryEnvelope(success=True, delivery=delivery)


@get("/{webhook_id:uuid}", responses=READ)
async def get_webhook(request: Request, principal: NamedDependency[Principal],
                      webhook_id: FromPath[uuid.UUID]) -> EndpointEnvelope:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await _endpoint_or_404(conn, webhook_id)
    return EndpointEnvelope(success=True, webhook=endpoint_json(row))


@patch("/{webhook_id:uuid}", responses=READ)
async def patch_webhook(request: Request, principal: NamedDependency[Principal], webhook_id: FromPath[uuid.UUID],
                        data: JSONBody[PatchWebhookBody]) -> EndpointEnvelope:
    """Enable (clearing the failure count) or disable an endpoint. Dead letters stay; replay them."""
    body = data
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
    return EndpointEnvelope(success=True, webhook=endpoint_json(row))


@delete("/{webhook_id:uuid}", status_code=200, responses=READ)
async def delete_webhook(request: Request, principal: NamedDependency[Principal],
                         webhook_id: FromPath[uuid.UUID]) -> Message:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await _endpoint_or_404(conn, webhook_id)
        await conn.execute("DELETE FROM webhook_endpoints WHERE id = $1", row["id"])
        # Pending deliveries end here; their timers find them cancelled and do nothing.
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'cancelled', last_error = 'endpoint deleted', next_attempt_at = NULL,"
            " updated_at = clock_timestamp() WHERE endpoint_id = $1 AND status = 'pending'", row["id"])
    return Message(success=True, message="Webhook deleted successfully")


router = Router(
    path="/api/v2/webhooks",
    route_handlers=[list_webhooks, create_webhook, list_deliveries, get_delivery, replay_delivery, get_webhook,
                    patch_webhook, delete_webhook],
    dependencies={"principal": Provide(authenticate)},
    exception_handlers=EXCEPTION_HANDLERS_V2,
    tags=["admin"],
    security=[{"bearerAuth": []}],
)

__all__ = ["router"]
