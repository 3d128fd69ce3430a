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
from litestar import Request, Router, delete, get, patch, post
from litestar.di import Provide

from libs.security import apikeys
from libs.security.auth import Principal
from services.gateway.auth import authenticate
from services.gateway.core.errors import NotFound
from services.gateway.errors import EXCEPTION_HANDLERS_V2, ApiError, V2Error, responses
from services.gateway.queries import iso

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


class KeyEnvelope(msgspec.Struct, kw_only=True):
    success: bool
    api_key: ApiKeyView


class KeyList(msgspec.Struct, kw_only=True):
    success: bool
    api_keys: list[ApiKeyView]
    count: int


class IssuedKey(msgspec.Struct, kw_only=True):
    success: bool
    api_key: ApiKeyView
    key: str
    message: str


class Deleted(msgspec.Struct, kw_only=True):
    success: bool
    message: str


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


def _invalid(exc: apikeys.InvalidKeySetting) -> ApiError:
    return ApiError(400, str(exc), exc.field)


def _store(request: Request):
    return request.app.state.ctx.store


@get("/", responses=responses(V2Error, 429))
async def list_api_keys(request: Request, principal: Principal) -> KeyList:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        rows = await apikeys.list_keys(conn, principal.tenant_id)
    return KeyList(success=True, api_keys=[key_json(r) for r in rows], count=len(rows))


@post("/", status_code=201, responses=responses(V2Error, 404, 429))
async def create_api_key(request: Request, principal: Principal, data: CreateKeyBody) -> IssuedKey:
    body = data
    rate = body.rate_limit or RateLimitBody()
    try:
        async with _store(request).tenant_transaction(principal.tenant_id) as conn:
            key, row = await apikeys.create_key(
                conn, tenant_id=principal.tenant_id, name=body.name,
                workflow_ids=apikeys.parse_workflow_ids(body.workflow_ids), created_by=principal.user_id,
                expires_at=body.expires_at, monthly_limit=body.monthly_limit,
                burst=apikeys.DEFAULT_BURST if rate.burst is UNSET else rate.burst,
                per_minute=apikeys.DEFAULT_PER_MINUTE if rate.per_minute is UNSET else rate.per_minute)
    except apikeys.InvalidKeySetting as exc:
        raise _invalid(exc) from None
    return IssuedKey(success=True, api_key=key_json(row), key=key, message="Store this key now: it is not shown again")


READ = responses(V2Error, 404, 429)


@get("/{key_id:uuid}", responses=READ)
async def get_api_key(request: Request, principal: Principal, key_id: uuid.UUID) -> KeyEnvelope:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await apikeys.get_key(conn, principal.tenant_id, key_id)
    if row is None:
        raise NotFound("API key")
    return KeyEnvelope(success=True, api_key=key_json(row))


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


async def _update(request: Request, principal: Principal, kid: uuid.UUID, changes: dict[str, Any]) -> KeyEnvelope:
    try:
        async with _store(request).tenant_transaction(principal.tenant_id) as conn:
            row = await apikeys.update_key(conn, principal.tenant_id, kid, **changes)
    except apikeys.InvalidKeySetting as exc:
        raise _invalid(exc) from None
    if row is None:
        raise NotFound("API key")
    return KeyEnvelope(success=True, api_key=key_json(row))


@patch("/{key_id:uuid}", responses=READ)
async def patch_api_key(request: Request, principal: Principal, key_id: uuid.UUID, data: PatchKeyBody
                        ) -> KeyEnvelope:
    try:
        changes = _changes(data)
    except apikeys.InvalidKeySetting as exc:
        raise _invalid(exc) from None
    return await _update(request, principal, key_id, changes)


@post("/{key_id:uuid}/deactivate", status_code=200, responses=READ)
async def deactivate_api_key(request: Request, principal: Principal, key_id: uuid.UUID) -> KeyEnvelope:
    return await _update(request, principal, key_id, {"active": False})


@post("/{key_id:uuid}/rotate", status_code=200, responses=READ)
async def rotate_api_key(request: Request, principal: Principal, key_id: uuid.UUID) -> IssuedKey:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        rotated = await apikeys.rotate_key(conn, principal.tenant_id, key_id)
    if rotated is None:
        raise NotFound("API key")
    key, row = rotated
    return IssuedKey(success=True, api_key=key_json(row), key=key,
                     message="Store this key now: it is not shown again; the previous key no longer works")


@delete("/{key_id:uuid}", status_code=200, responses=READ)
async def delete_api_key(request: Request, principal: Principal, key_id: uuid.UUID) -> Deleted:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        deleted = await apikeys.delete_key(conn, principal.tenant_id, key_id)
    if not deleted:
        raise NotFound("API key")
    return Deleted(success=True, message="API key deleted")


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
