"""Production logins: a member of weft_system reads across tenants without owning anything; tenant work
still runs under row-level security; an app login cannot reach across tenants (migration 023), except
through migration 026's narrow functions, which answer one key by its hash, a bucket, or a count."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from libs.events.db import tenant_transaction
from libs.security import apikeys
from libs.security.ratelimit import Limit, SharedBuckets
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


# -- migration 026: the app login's lookups before a tenant is known (docs/decisions/0115) --------------------


async def _key_of(owner: asyncpg.Connection, tenant: str) -> str:
    key = apikeys.generate_key()
    await owner.execute("INSERT INTO api_keys (id, tenant_id, name, key_hash, key_hint, workflow_ids, created_by)"
                        " VALUES ($1, $2, 'k', $3, $4, '{}', 'test')",
                        uuid.uuid4(), tenant, apikeys.hash_key(key), apikeys.hint_of(key))
    return key


async def test_admission_finds_one_key_by_its_whole_hash_and_lists_nothing(roles_db) -> None:
    dsn, _, app_login = roles_db
    owner = await asyncpg.connect(dsn)
    key_a, key_b = await _key_of(owner, "ta"), await _key_of(owner, "tb")
    await owner.close()
    pool = await asyncpg.create_pool(_as(dsn, app_login), min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT count(*) FROM api_keys") == 0  # the table itself stays closed
        found = await apikeys.admit(pool, key_a)
        assert found is not None and found.tenant_id == "ta" and found.rate.allowed
        assert (await apikeys.admit(pool, key_b)).tenant_id == "tb"
        assert await apikeys.admit(pool, apikeys.generate_key()) is None
        # Whatever the argument (no hash, part of one, a pattern, a made-up or longer hash), no key: only the
        # whole hash of a real key finds that one key; never a list.
        probes = [None, b"", apikeys.hash_key(key_a)[:16], b"%", b"\x00" * 32, apikeys.hash_key(key_a) + b"\x00"]
        for probe in probes:
            assert await pool.fetch("SELECT * FROM weft_admit_api_key($1, NULL)", probe) == [], probe
        async with tenant_transaction(pool, "tb", "weft_app") as conn:
            rows = await conn.fetch("SELECT tenant_id FROM weft_admit_api_key($1, NULL)", apikeys.hash_key(key_a))
            assert [r["tenant_id"] for r in rows] == ["ta"]  # the key names its tenant: that is admission
            assert await conn.fetchval("SELECT count(*) FROM api_keys") == 1  # but the table shows tb's only
        # Its columns are the admission record: no hash, hint, quota or creator comes back.
        async with pool.acquire() as conn:
            statement = await conn.prepare("SELECT * FROM weft_admit_api_key($1, NULL)")
            columns = [a.name for a in statement.get_attributes()]
        assert columns == ["id", "tenant_id", "name", "workflow_ids", "active", "rate_burst", "rate_per_minute",
                           "expired", "allowed", "tokens", "at_us"]
    finally:
        await pool.close()


async def test_the_functions_run_as_a_narrow_owner_and_only_weft_app_may_call_them(roles_db) -> None:
    dsn, _, app_login = roles_db
    owner = await asyncpg.connect(dsn)
    stranger = f"wnone_{uuid.uuid4().hex[:8]}"
    try:
        names = ["weft_admit_api_key", "weft_take_rate_token", "weft_sweep_rate_buckets", "weft_count_dead_letters"]
        rows = await owner.fetch(
            "SELECT p.proname, p.prosecdef, p.proconfig, r.rolname, r.rolbypassrls OR r.rolsuper AS bypasses,"
            " has_function_privilege('weft_app', p.oid, 'EXECUTE') AS app"
            " FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE p.proname = ANY($1::text[])", names)
        assert sorted(r["proname"] for r in rows) == sorted(names)
        for r in rows:
            assert r["prosecdef"] and r["rolname"] == "weft_lookup" and not r["bypasses"], dict(r)
            assert r["app"] and "search_path=pg_catalog, pg_temp" in r["proconfig"], dict(r)
        assert not await owner.fetchval("SELECT rolcanlogin OR rolinherit FROM pg_roles WHERE rolname = 'weft_lookup'")
        await owner.execute(f"CREATE ROLE {stranger} LOGIN")
        conn = await asyncpg.connect(_as(dsn, stranger))
        try:  # a login that is no member of weft_app may call none of them
            for sql in ("SELECT weft_admit_api_key(NULL, NULL)", "SELECT weft_count_dead_letters()",
                        "SELECT weft_sweep_rate_buckets(NULL)", "SELECT weft_take_rate_token('b', 't', 1, 1, NULL)"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)
        finally:
            await conn.close()
        app = await asyncpg.connect(_as(dsn, app_login))
        try:  # the app login cannot become the functions' owner
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.execute("SET ROLE weft_lookup")
        finally:
            await app.close()
    finally:
        await owner.execute(f"DROP ROLE IF EXISTS {stranger}")
        await owner.close()


async def test_an_app_login_takes_tokens_and_counts_dead_letters_of_every_tenant(roles_db) -> None:
    dsn, _, app_login = roles_db
    owner = await asyncpg.connect(dsn)
    for tenant in ("ta", "tb"):
        await owner.execute("INSERT INTO webhook_dead_letters (delivery_id, tenant_id, endpoint_id, reason, dead_at)"
                            " VALUES ($1, $2, $3, 'gone', now())", uuid.uuid4(), tenant, uuid.uuid4())
    await owner.close()
    pool = await asyncpg.create_pool(_as(dsn, app_login), min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT count(*) FROM webhook_dead_letters") == 0
        assert await pool.fetchval("SELECT weft_count_dead_letters()") == 2
        buckets = SharedBuckets(pool)
        limit = Limit(burst=2, per_minute=1)
        name = f"authfail:{uuid.uuid4().hex}"
        assert [(await buckets.take(name, "_auth_failures", limit)).allowed for _ in range(3)] == [True, True, False]
        assert await pool.fetchval("SELECT count(*) FROM rate_buckets") == 0  # written, yet not readable
        assert await buckets.sweep() == 0  # nothing is full again yet
        later = SharedBuckets(pool, clock=lambda: time.time_ns() // 1000 + 600 * 1_000_000)
        assert await later.sweep() >= 1  # ten minutes on, every tenant's idle bucket is full again: gone
        assert (await buckets.take(name, "_auth_failures", limit)).remaining == 1  # and starts full
    finally:
        await pool.close()
