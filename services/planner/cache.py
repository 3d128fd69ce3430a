"""Identical planning requests within a TTL are served from a per-tenant cache table."""

from __future__ import annotations

import msgspec

from libs.events.store import EventStore
from services.planner.plan_result import PlanResult


class PlanCache:
    def __init__(self, store: EventStore, ttl_s: float):
        self.store, self.ttl_s = store, ttl_s

    async def get(self, tenant_id: str, key: str) -> PlanResult | None:
        async with self.store.tenant_transaction(tenant_id) as conn:
            raw = await conn.fetchval(
                "SELECT result::text FROM plan_cache WHERE tenant_id = $1 AND cache_key = $2"
                " AND created_at > clock_timestamp() - make_interval(secs => $3)",
                tenant_id, key, self.ttl_s,
            )
        return None if raw is None else msgspec.json.decode(raw, type=PlanResult)

    async def put(self, tenant_id: str, key: str, result: PlanResult) -> None:
        async with self.store.tenant_transaction(tenant_id) as conn:
            await conn.execute(
                "INSERT INTO plan_cache (tenant_id, cache_key, result) VALUES ($1, $2, $3::jsonb)"
                " ON CONFLICT (tenant_id, cache_key) DO UPDATE SET result = excluded.result,"
                " created_at = clock_timestamp()",
                tenant_id, key, msgspec.json.encode(result).decode(),
            )
