"""API-key use cases for the dashboard, over libs/security/apikeys.py (as the admin API uses it)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from libs.security import apikeys
from libs.security.auth import Principal
from services.gateway.core import Core
from services.gateway.core.errors import ApiError, NotFound


def _invalid(exc: apikeys.InvalidKeySetting) -> ApiError:
    return ApiError(400, str(exc), exc.field)


async def list_all(core: Core, principal: Principal) -> list[asyncpg.Record]:
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return await apikeys.list_keys(conn, principal.tenant_id)


async def create(core: Core, principal: Principal, name: str, workflow_ids: Sequence[str],
                 monthly_limit: int | None = apikeys.DEFAULT_MONTHLY_LIMIT, expires_at: datetime | None = None
                 ) -> tuple[str, asyncpg.Record]:
    """A new key for the named workflows; the key itself is returned here only (its hash is stored)."""
    try:
        async with core.store.tenant_transaction(principal.tenant_id) as conn:
            return await apikeys.create_key(
                conn, tenant_id=principal.tenant_id, name=name, workflow_ids=apikeys.parse_workflow_ids(workflow_ids),
                created_by=principal.user_id, expires_at=expires_at, monthly_limit=monthly_limit,
                burst=apikeys.DEFAULT_BURST, per_minute=apikeys.DEFAULT_PER_MINUTE)
    except apikeys.InvalidKeySetting as exc:
        raise _invalid(exc) from None


async def deactivate(core: Core, principal: Principal, key_id: uuid.UUID) -> asyncpg.Record:
    try:
        async with core.store.tenant_transaction(principal.tenant_id) as conn:
            row = await apikeys.update_key(conn, principal.tenant_id, key_id, active=False)
    except apikeys.InvalidKeySetting as exc:
        raise _invalid(exc) from None
    if row is None:
        raise NotFound("API key")
    return row


async def rotate(core: Core, principal: Principal, key_id: uuid.UUID) -> tuple[str, asyncpg.Record]:
    """A new key with the same id and settings; the old one stops working. Shown once."""
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rotated = await apikeys.rotate_key(conn, principal.tenant_id, key_id)
    if rotated is None:
        raise NotFound("API key")
    return rotated
