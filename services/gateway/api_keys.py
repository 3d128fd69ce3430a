"""API-key admin API for the tenant (user JWT), in the v2 style. A key is shown once, at create or rotate.

    /api/v2/api-keys                  GET (list), POST (create: the key is in the response, once)
    /api/v2/api-keys/{id}             GET, PATCH (name, workflow_ids, active, expires_at, monthly_limit,
                                      rate_limit {burst, per_minute}), DELETE
    /api/v2/api-keys/{id}/deactivate  POST
    /api/v2/api-keys/{id}/rotate      POST (new key, same id and settings; the old key stops working)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Router, delete, get, patch, post
from litestar.di import Provide

from libs.security import apikeys
from libs.security.auth import Principal
from services.gateway.auth import authenticate
from services.gateway.bodies import UNSET, decode_body
from services.gateway.errors import ApiError
from services.gateway.queries import iso
from services.gateway.core.ids import parse_id as _uuid


class RateLimitBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    burst: int | msgspec.UnsetType = UNSET
    per_minute: int | msgspec.UnsetType = UNSET


class CreateKeyBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    workflow_ids: list[str]
    expires_at: datetime | None = None
    monthly_limit: int | None = apikeys.DEFAULT_MONTHLY_LIMIT
    rate_limit: RateLimitBody | None = None


class PatchKeyBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str | msgspec.UnsetType = UNSET
    workflow_ids: list[str] | msgspec.UnsetType = UNSET
    active: bool | msgspec.UnsetType = UNSET
    expires_at: datetime | None | msgspec.UnsetType = UNSET
    monthly_limit: int | None | msgspec.UnsetType = UNSET
    rate_limit: RateLimitBody | msgspec.UnsetType = UNSET


def _aware(value: datetime | None) -> datetime | None:
    """asyncpg gives Postgres' +-infinity (and year 1, its datetime.min) as naive datetimes: read them as UTC,
    so a row stored before expires_at was bounded never makes a read fail."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def key_json(row: asyncpg.Record) -> dict[str, Any]:
    now = datetime.now(UTC)
    expires_at = _aware(row["expires_at"])
    expired = expires_at is not None and expires_at <= now
    return {
        "id": str(row["id"]), "name": row["name"], "key_prefix": row["key_hint"],
        "workflow_ids": list(row["workflow_ids"]), "active": row["active"],
        "status": "inactive" if not row["active"] else "expired" if expired else "active",
        "expires_at": iso(expires_at), "monthly_limit": row["monthly_limit"],
        "usage": {"month": apikeys.month_of(now).strftime("%Y-%m"), "executions": row["used_this_month"]},
        "rate_limit": {"burst": row["rate_burst"], "per_minute": row["rate_per_minute"]},
        "created_by": row["created_by"], "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "rotated_at": iso(row["rotated_at"]),
    }


def _invalid(exc: apikeys.InvalidKeySetting) -> ApiError:
    return ApiError(400, str(exc), exc.field)


def _store(request: Request):
    return request.app.state.ctx.store


@get("/")
async def list_api_keys(request: Request, principal: Principal) -> dict[str, Any]:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        rows = await apikeys.list_keys(conn, principal.tenant_id)
    return {"success": True, "api_keys": [key_json(r) for r in rows], "count": len(rows)}


@post("/", status_code=201)
async def create_api_key(request: Request, principal: Principal) -> dict[str, Any]:
    body = decode_body(await request.body(), CreateKeyBody)
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
    return {"success": True, "api_key": key_json(row), "key": key,
            "message": "Store this key now: it is not shown again"}


@get("/{key_id:str}")
async def get_api_key(request: Request, principal: Principal, key_id: str) -> dict[str, Any]:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        row = await apikeys.get_key(conn, principal.tenant_id, _uuid(key_id, "API key"))
    if row is None:
        raise ApiError(404, "API key not found")
    return {"success": True, "api_key": key_json(row)}


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


async def _update(request: Request, principal: Principal, key_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    kid = _uuid(key_id, "API key")
    try:
        async with _store(request).tenant_transaction(principal.tenant_id) as conn:
            row = await apikeys.update_key(conn, principal.tenant_id, kid, **changes)
    except apikeys.InvalidKeySetting as exc:
        raise _invalid(exc) from None
    if row is None:
        raise ApiError(404, "API key not found")
    return {"success": True, "api_key": key_json(row)}


@patch("/{key_id:str}")
async def patch_api_key(request: Request, principal: Principal, key_id: str) -> dict[str, Any]:
    try:
        changes = _changes(decode_body(await request.body(), PatchKeyBody))
    except apikeys.InvalidKeySetting as exc:
        raise _invalid(exc) from None
    return await _update(request, principal, key_id, changes)


@post("/{key_id:str}/deactivate", status_code=200)
async def deactivate_api_key(request: Request, principal: Principal, key_id: str) -> dict[str, Any]:
    return await _update(request, principal, key_id, {"active": False})


@post("/{key_id:str}/rotate", status_code=200)
async def rotate_api_key(request: Request, principal: Principal, key_id: str) -> dict[str, Any]:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        rotated = await apikeys.rotate_key(conn, principal.tenant_id, _uuid(key_id, "API key"))
    if rotated is None:
        raise ApiError(404, "API key not found")
    key, row = rotated
    return {"success": True, "api_key": key_json(row), "key": key,
            "message": "Store this key now: it is not shown again; the previous key no longer works"}


@delete("/{key_id:str}", status_code=200)
async def delete_api_key(request: Request, principal: Principal, key_id: str) -> dict[str, Any]:
    async with _store(request).tenant_transaction(principal.tenant_id) as conn:
        deleted = await apikeys.delete_key(conn, principal.tenant_id, _uuid(key_id, "API key"))
    if not deleted:
        raise ApiError(404, "API key not found")
    return {"success": True, "message": "API key deleted"}


router = Router(
    path="/api/v2/api-keys",
    route_handlers=[list_api_keys, create_api_key, get_api_key, patch_api_key, deactivate_api_key, rotate_api_key,
                    delete_api_key],
    dependencies={"principal": Provide(authenticate)},
)

__all__ = ["router"]
