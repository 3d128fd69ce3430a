"""Postgres pools and tenant-scoped transactions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from libs.events.settings import Settings

# What a Postgres restart or failover looks like to a client (the server went away, is shutting down or
# starting up): wait and try again, never a dead task, a poison command or a 500. asyncpg raises
# InternalClientError ("cannot switch to state ...; another operation is in progress") when the server
# goes away between the messages of one operation.
DB_UNAVAILABLE = (ConnectionError, asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.PostgresConnectionError,
                  asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.CannotConnectNowError)

# Both values are inlined into SQL below, so they must be plain identifiers (tenant ids already are:
# they come from verified tokens or subjects and match bus.TENANT_RE).
SAFE_NAME = _SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


async def _reset(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool without asyncpg's default reset query (advisory unlock, CLOSE ALL,
    UNLISTEN, RESET ALL: a round trip on every release). Nothing here needs it: tenant settings are
    transaction-scoped, and LISTEN and session locks live on dedicated connections. An open
    transaction (a cancelled task) is rolled back by asyncpg itself before this runs (Connection._reset);
    tests/test_db.py pins both."""


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.database_url, min_size=min_size, max_size=max_size, command_timeout=30, reset=_reset
    )


def tenant_begin_sql(tenant_id: str, app_role: str) -> str:
    """BEGIN plus the transaction-local role and tenant, in one round trip."""
    if not _SAFE.match(tenant_id) or (app_role and not _SAFE.match(app_role)):
        raise ValueError(f"unsafe tenant id or role: {tenant_id!r}, {app_role!r}")
    role = f"set_config('role', '{app_role}', true), " if app_role else ""
    return f"BEGIN; SELECT {role}set_config('weft.tenant_id', '{tenant_id}', true)"


@asynccontextmanager
async def tenant_transaction(pool: asyncpg.Pool, tenant_id: str, app_role: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that runs as the app role with row-level security bound to one tenant.

    Both settings are transaction-local (set_config(..., true)), so nothing leaks into the pooled
    connection's next user, whatever the pool resets.
    """
    async with pool.acquire() as conn:
        await conn.execute(tenant_begin_sql(tenant_id, app_role))
        try:
            yield conn
        except BaseException:
            try:
                await conn.execute("ROLLBACK")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                pass  # the pool discards a broken connection; the original error is what matters
            raise
        await conn.execute("COMMIT")
