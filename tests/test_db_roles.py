"""Production logins: a member of weft_system reads across tenants without owning anything; tenant work
still runs under row-level security; an app login cannot reach across tenants (migration 023)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from libs.events.db import tenant_transaction
from tests.conftest import migrated_database


@pytest.fixture(scope="module")
async def roles_db(infra) -> AsyncIterator[tuple[str, str, str]]:
    """A migrated database with two rows of different tenants, a system login and an app login."""
    dsn = await migrated_database(infra, "weft_roles")
    suffix = uuid.uuid4().hex[:8]
    system_login, app_login = f"wsys_{suffix}", f"wapp_{suffix}"
    owner = await asyncpg.connect(dsn)
    try:
        # The operator's part (docs/operations.md, "Database roles"): logins that are members, nothing more.
        await owner.execute(f"CREATE ROLE {system_login} LOGIN IN ROLE weft_system")
        await owner.execute(f"CREATE ROLE {app_login} LOGIN IN ROLE weft_app")
        for tenant in ("ta", "tb"):
            await owner.execute("INSERT INTO agents (id, tenant_id, name, endpoint) VALUES ($1, $2, 'a', 'http://x')",
                                uuid.uuid4(), tenant)
        yield dsn, system_login, app_login
    finally:
        for login in (system_login, app_login):
            await owner.execute(f"DROP OWNED BY {login}; DROP ROLE {login}")
        await owner.close()


def _as(dsn: str, login: str, role: str | None = None) -> str:
    rest = dsn.split("@", 1)[1]
    return f"postgresql://{login}@{rest}" + (f"?role={role}" if role else "")


async def test_a_system_login_reads_every_tenant_and_tenant_work_stays_bound(roles_db) -> None:
    dsn, system_login, _ = roles_db
    pool = await asyncpg.create_pool(_as(dsn, system_login, "weft_system"), min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT current_user") == "weft_system"
        assert await pool.fetchval("SELECT session_user") == system_login
        assert await pool.fetchval("SELECT count(*) FROM agents") == 2
        async with tenant_transaction(pool, "ta", "weft_app") as conn:
            assert await conn.fetchval("SELECT current_user") == "weft_app"
            assert await conn.fetchval("SELECT count(*) FROM agents") == 1
        assert await pool.fetchval("SELECT current_user") == "weft_system"  # back after the transaction
    finally:
        await pool.close()


async def test_the_system_role_owns_nothing_and_cannot_rewrite_the_log(roles_db) -> None:
    dsn, system_login, _ = roles_db
    conn = await asyncpg.connect(_as(dsn, system_login, "weft_system"))
    try:
        for sql in ("DROP TABLE agents", "ALTER TABLE agents ADD COLUMN x int", "UPDATE events SET tenant_id = 'x'",
                    "DELETE FROM events", "ALTER TABLE agents DISABLE ROW LEVEL SECURITY",
                    "DELETE FROM schema_migrations"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
        assert await conn.fetchval("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert not await conn.fetchval("SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles"
                                        " WHERE rolname = current_user")
    finally:
        await conn.close()


async def test_membership_alone_does_not_bypass_row_level_security(roles_db) -> None:
    """BYPASSRLS is not inherited: without ?role=weft_system the login sees no tenant's rows."""
    dsn, system_login, _ = roles_db
    conn = await asyncpg.connect(_as(dsn, system_login))
    try:
        assert await conn.fetchval("SELECT count(*) FROM agents") == 0
    finally:
        await conn.close()


async def test_an_app_login_cannot_become_the_system_role(roles_db) -> None:
    dsn, _, app_login = roles_db
    conn = await asyncpg.connect(_as(dsn, app_login))
    try:
        assert await conn.fetchval("SELECT count(*) FROM agents") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET ROLE weft_system")
    finally:
        await conn.close()
    with pytest.raises(asyncpg.PostgresError):
        await asyncpg.connect(_as(dsn, app_login, "weft_system"))
