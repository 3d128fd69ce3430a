"""Pooled connections carry nothing from one user to the next, without asyncpg's per-release reset query."""

from __future__ import annotations

import asyncio

import pytest

from libs.events.db import create_pool, tenant_transaction


@pytest.fixture
async def one_connection_pool(settings):
    # max_size=1: every acquire gets the very connection the previous user released.
    pool = await create_pool(settings, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def _session_state(pool) -> tuple[bool, str, str]:
    async with pool.acquire() as conn:
        return (conn.is_in_transaction(), await conn.fetchval("SELECT current_user"),
                await conn.fetchval("SELECT coalesce(current_setting('weft.tenant_id', true), '')"))


async def test_tenant_role_and_tenant_do_not_outlive_the_transaction(one_connection_pool, settings, tenant):
    before = await _session_state(one_connection_pool)
    async with tenant_transaction(one_connection_pool, tenant, settings.db_app_role) as conn:
        assert await conn.fetchval("SELECT current_user") == settings.db_app_role
        assert await conn.fetchval("SELECT current_setting('weft.tenant_id', true)") == tenant
    assert await _session_state(one_connection_pool) == before
    assert before[1] != settings.db_app_role and before[2] == ""


async def test_a_task_cancelled_inside_a_transaction_leaves_a_clean_connection(one_connection_pool, settings, tenant):
    entered = asyncio.Event()

    async def stuck() -> None:
        async with one_connection_pool.acquire() as conn:
            await conn.execute(f"BEGIN; SELECT set_config('weft.tenant_id', '{tenant}', true)")
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS leak_probe (x int)")
            await conn.execute("INSERT INTO leak_probe VALUES (1)")
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(stuck())
    await entered.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    in_transaction, _, tenant_setting = await _session_state(one_connection_pool)
    assert not in_transaction and tenant_setting == ""
    async with one_connection_pool.acquire() as conn:
        # The half-done transaction was rolled back, not committed by the next user.
        assert await conn.fetchval("SELECT to_regclass('pg_temp.leak_probe')") is None
