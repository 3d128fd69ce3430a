"""Postgres pools and tenant-scoped transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from libs.events.settings import Settings


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.database_url, min_size=min_size, max_size=max_size, command_timeout=30
    )


@asynccontextmanager
async def tenant_transaction(
    pool: asyncpg.Pool, tenant_id: str, app_role: str
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that runs as the app role with row-level security bound to one tenant.

    Both settings are transaction-local (set_config(..., true)), so nothing leaks into the pooled
    connection's next user, whatever the pool resets.
    """
    async with pool.acquire() as conn, conn.transaction():
        if app_role:
            await conn.execute(
                "SELECT set_config('role', $1, true), set_config('weft.tenant_id', $2, true)",
                app_role,
                tenant_id,
            )
        else:
            await conn.execute("SELECT set_config('weft.tenant_id', $1, true)", tenant_id)
        yield conn
