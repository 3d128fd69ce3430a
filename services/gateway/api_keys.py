"""API-key admin API for the tenant (user JWT), in the v2 style. A key is shown once, at create or rotate.

    /api/v2/api-keys                  GET (list), POST (create: the key is in the response, once)
    /api/v2/api-keys/{id}             GET, PATCH (name, workflow_ids, active, expires_at, monthly_limit,
                                      rate_limit {burst, per_minute}), DELETE
    /api/v2/api-keys/{id}/deactivate  POST
    /api/v2/api-keys/{id}/rotate      POST (new key, same id and settings; the old key stops working)
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Router, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody

from libs.security import apikeys
from libs.security.auth import Principal
from services.gateway.shapes import Message, envelope
from services.gateway.auth import authenticate
from services.gateway.core import Core, keys
from services.gateway.errors import EXCEPTION_HANDLERS_V2, ApiError, V2Error, responses
from services.gateway.timestamps import iso

UNSET: Any = msgspec.UNSET
KeyName = Annotated[str, msgspec.Meta(max_length=200)]
Ids = Annotated[list[Annotated[str, msgspec.Meta(max_length=100)]], msgspec.Meta(max_length=1000)]


class RateLimitBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    burst: int | msgspec.UnsetType = UNSET
    per_minute: int | msgspec.UnsetType = UNSET


class CreateKeyBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: KeyName
    workflow_ids: Ids
    expires_at: datetime | None = None
    monthly_limit: int | None = apikeys.DEFAULT_MONTHLY_LIMIT
    rate_limit: RateLimitBody | None = None


class PatchKeyBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: KeyName | msgspec.UnsetType = UNSET
    workflow_ids: Ids | msgspec.UnsetType = UNSET
    active: bool | msgspec.UnsetType = UNSET
    expires_at: datetime | None | msgspec.UnsetType = UNSET
    monthly_limit: int | None | msgspec.UnsetType = UNSET
    rate_limit: RateLimitBody | msgspec.UnsetType = UNSET


def _aware(value: datetime | None) -> datetime | None:
    """asyncpg gives Postgres' +-infinity (and year 1, its datetime.min) as naive datetimes: read them as UTC,
    so a row stored before expires_at was bounded never makes a read fail."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Usage(msgspec.Struct, kw_only=True):
    month: str
    executions: int


class RateLimit(msgspec.Struct, kw_only=True):
    burst: int
    per_minute: int


class ApiKeyView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    key_prefix: str
    workflow_ids: list[str]
    active: bool
    status: str
    expires_at: str | None
    monthly_limit: int | None
    usage: Usage
    rate_limit: RateLimit
    created_by: str
    created_at: str | None
    updated_at: str | None
    rotated_at: str | None


KeyEnvelope = envelope("KeyEnvelope", __name__, api_key=ApiKeyView)


KeyList = envelope("KeyList", __name__, api_keys=list[ApiKeyView], count=int)


IssuedKey = envelope("IssuedKey", __name__, api_key=ApiKeyView, key=str, message=str)


def key_json(row: asyncpg.Record) -> ApiKeyView:
    now = datetime.now(UTC)
    expires_at = _aware(row["expires_at"])
    expired = expires_at is not None and expires_at <= now
    return ApiKeyView(
        id=str(row["id"]), name=row["name"], key_prefix=row["key_hint"],
        workflow_ids=[str(w) for w in row["workflow_ids"]], active=row["active"],
        status="inactive" if not row["active"] else "expired" if expired else "active",
        expires_at=iso(expires_at), monthly_limit=row["monthly_limit"],
        usage=Usage(month=apikeys.month_of(now).strftime("%Y-%m"), executions=row["used_this_month"]),
        rate_limit=RateLimit(burst=row["rate_burst"], per_minute=row["rate_per_minute"]),
        created_by=row["created_by"], created_at=iso(row["created_at"]), updated_at=iso(row["updated_at"]),
        rotated_at=iso(row["rotated_at"]))


@get("/", responses=responses(V2Error, 429))
async def list_api_keys(principal: NamedDependency[Principal], core: NamedDependency[Core]) -> KeyList:
    rows = await keys.list_all(core, principal)
    return KeyList(success=True, api_keys=[key_json(r) for r in rows], count=len(rows))


@post("/", status_code=201, responses=responses(V2Error, 404, 429))
async def create_api_key(principal: NamedDependency[Principal], core: NamedDependency[Core],
                         data: JSONBody[CreateKeyBody]) -> IssuedKey:
    rate = data.rate_limit or RateLimitBody()
    key, row = await keys.create(
        core, principal, data.name, data.workflow_ids, monthly_limit=data.monthly_limit, expires_at=data.expires_at,
        burst=apikeys.DEFAULT_BURST if rate.burst is UNSET else rate.burst,
        per_minute=apikeys.DEFAULT_PER_MINUTE if rate.per_minute is UNSET else rate.per_minute)
    return IssuedKey(success=True, api_key=key_json(row), key=key, message="Store this key now: it is not shown again")


READ = responses(V2Error, 404, 429)


@get("/{key_id:uuid}", responses=READ)
async def get_api_key(principal: NamedDependency[Principal], core: NamedDependency[Core],
                      key_id: FromPath[uuid.UUID]) -> KeyEnvelope:
    return KeyEnvelope(success=True, api_key=key_json(await keys.get(core, principal, key_id)))


def _changes(body: PatchKeyBody) -> dict[str, Any]:
    changes = {name: getattr(body, name) for name in ("name", "active", "expires_at", "monthly_limit")
               if getattr(body, name) is not UNSET}
    if body.workflow_ids is not UNSET:
        changes["workflow_ids"] = apikeys.parse_workflow_ids(body.workflow_ids)
    if body.rate_limit is not UNSET:
        if body.rate_limit.burst is not UNSET:
            changes["burst"] = body.rate_limit.burst
        if body.rate_limit.per_minute is not UNSET:
            changes["per_minute"] = body.rate_limit.per_minute
    return changes


@patch("/{key_id:uuid}", responses=READ)
async def patch_api_key(principal: NamedDependency[Principal], core: NamedDependency[Core], key_id: FromPath[uuid.UUID],
                        data: JSONBody[PatchKeyBody]) -> KeyEnvelope:
    try:
        changes = _changes(data)
    except apikeys.InvalidKeySetting as exc:
        raise ApiError(400, str(exc), exc.field) from None
    return KeyEnvelope(success=True, api_key=key_json(await keys.update(core, principal, key_id, **changes)))


@post("/{key_id:uuid}/deactivate", status_code=200, responses=READ)
async def deactivate_api_key(principal: NamedDependency[Principal], core: NamedDependency[Core],
                             key_id: FromPath[uuid.UUID]) -> KeyEnvelope:
    return KeyEnvelope(success=True, api_key=key_json(await keys.deactivate(core, principal, key_id)))


@post("/{key_id:uuid}/rotate", status_code=200, responses=READ)
async def rotate_api_key(principal: NamedDependency[Principal], core: NamedDependency[Core],
                         key_id: FromPath[uuid.UUID]) -> IssuedKey:
    key, row = await keys.rotate(core, principal, key_id)
    return IssuedKey(success=True, api_key=key_json(row), key=key,
                     message="Store this key now: it is not shown again; the previous key no longer works")


@delete("/{key_id:uuid}", status_code=200, responses=READ)
async def delete_api_key(principal: NamedDependency[Principal], core: NamedDependency[Core],
                         key_id: FromPath[uuid.UUID]) -> Message:
    await keys.delete(core, principal, key_id)
    return Message(success=True, message="API key deleted")


router = Router(
    path="/api/v2/api-keys",
    route_handlers=[list_api_keys, create_api_key, get_api_key, patch_api_key, deactivate_api_key, rotate_api_key,
                    delete_api_key],
    dependencies={"principal": Provide(authenticate)},
    exception_handlers=EXCEPTION_HANDLERS_V2,
    tags=["admin"],
    security=[{"bearerAuth": []}],
)

__all__ = ["router"]
