"""The shared token buckets in real Postgres: the SQL equals the reference, concurrent requests share one
bucket, and two real gateway processes hold a client to one bucket (public API keys and the v2 limit)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import httpx
import pytest

from libs.security import apikeys
from libs.security.auth import issue_token
from libs.security.ratelimit import MICRO, Limit, MemoryBuckets, SharedBuckets
from tests.conftest import start_processes


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000 * MICRO

    def __call__(self) -> int:
        return self.now


async def test_the_sql_bucket_gives_the_reference_answer_on_random_sequences(pool):
    """Same clock, same requests, same limits (changed mid-way, as a key's settings can be): every decision
    and every stored bucket is identical, including clocks that step back."""
    rng = random.Random(7)
    for case in range(25):
        clock = Clock()
        shared, memory = SharedBuckets(pool, clock), MemoryBuckets(clock)
        bucket = f"test:{uuid.uuid4()}"
        limit = Limit(burst=rng.randint(1, 12), per_minute=rng.choice([1, 7, 60, 100, 599, 6000]))
        for _ in range(60):
            clock.now += rng.choice([0, 0, 1, 999, 16_667, 250_000, MICRO, 7 * MICRO, -3 * MICRO, 600 * MICRO])
            if rng.random() < 0.05:
                limit = Limit(burst=rng.randint(1, 12), per_minute=rng.choice([1, 60, 100, 6000]))
            expected = memory.take(bucket, limit)
            got = await shared.take(bucket, "t-ratelimit", limit)
            assert got == expected, (case, limit, clock.now)


async def test_concurrent_requests_on_one_bucket_get_exactly_the_burst(pool):
    clock = Clock()  # frozen: no refill, so exactly `burst` of the requests may pass
    shared = SharedBuckets(pool, clock)
    bucket, limit = f"test:{uuid.uuid4()}", Limit(burst=7, per_minute=60)
    decisions = await asyncio.gather(*(shared.take(bucket, "t-ratelimit", limit) for _ in range(40)))
    assert sum(d.allowed for d in decisions) == 7
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(7))


async def test_the_sweep_removes_only_buckets_that_are_full_again(pool):
    clock = Clock()
    shared, memory = SharedBuckets(pool, clock), MemoryBuckets(clock)
    limit = Limit(burst=5, per_minute=60)  # full again 5 s after being emptied
    idle, busy = f"test:{uuid.uuid4()}", f"test:{uuid.uuid4()}"
    for bucket in (idle, busy):
        for _ in range(5):
            await shared.take(bucket, "t-ratelimit", limit)
            memory.take(bucket, limit)
    clock.now += 3 * MICRO
    assert (await shared.take(busy, "t-ratelimit", limit)) == memory.take(busy, limit)
    clock.now += 2 * MICRO + 1  # idle: 5 s since its last request, full; busy: 2 s, not yet
    await shared.sweep()
    rows = await pool.fetch("SELECT bucket FROM rate_buckets WHERE bucket = ANY($1)", [idle, busy])
    left = {r["bucket"] for r in rows}
    assert left == {busy}
    for bucket in (idle, busy):  # the same answers as if nothing had been deleted
        for _ in range(6):
            assert (await shared.take(bucket, "t-ratelimit", limit)) == memory.take(bucket, limit)


@pytest.fixture(scope="module")
def two_gateways(infra, tmp_path_factory):
    """Two gateway processes on the session's Postgres and NATS, with the v2 default limit (100/minute)."""
    started = []
    try:
        for name in ("a", "b"):
            procs, ports = start_processes(infra, ["gateway"], tmp_path_factory.mktemp(f"gw-{name}"),
                                           {"WEFT_V2_RATE_LIMIT_PER_MINUTE": "100"})
            started.append((procs["gateway"], f"http://127.0.0.1:{ports['gateway']}"))
        yield [url for _, url in started]
    finally:
        for proc, _ in started:
            proc.stop()


async def _hammer(urls: list[str], path: str, headers: dict[str, str], count: int
                  ) -> tuple[list[httpx.Response], float]:
    """`count` requests, as fast as they go, spread over both gateways; returns them and the seconds taken."""
    clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=20) for url in urls]
    try:
        started = time.monotonic()
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> httpx.Response:
            async with sem:
                return await clients[i % len(clients)].get(path)

        responses = await asyncio.gather(*(one(i) for i in range(count)))
        return responses, time.monotonic() - started
    finally:
        for c in clients:
            await c.aclose()


async def _workflow(store, tenant: str) -> uuid.UUID:
    """A workflow row for the key to name (the limiter never needs it to run)."""
    wid = uuid.uuid4()
    async with store.tenant_transaction(tenant) as conn:
        await conn.execute(
            "INSERT INTO workflows (id, tenant_id, name, definition, version, status, created_by, created_at,"
            " updated_at, stream_version) VALUES ($1, $2, $3, '{}'::jsonb, '1.0.0', 'active', 'test', now(), now(), 1)",
            wid, tenant, f"wf-{wid.hex[:8]}")
    return wid


async def test_two_gateways_hold_an_api_key_to_one_bucket(two_gateways, store, tenant):
    wid = await _workflow(store, tenant)
    async with store.tenant_transaction(tenant) as conn:
        key, _ = await apikeys.create_key(conn, tenant_id=tenant, name="site", workflow_ids=[wid], created_by="test")
    responses, elapsed = await _hammer(two_gateways, f"/api/v1/public/executions/{uuid.uuid4()}/status",
                                       {"Authorization": f"Bearer {key}"}, 60)
    allowed = [r for r in responses if r.status_code == 404]
    limited = [r for r in responses if r.status_code == 429]
    assert len(allowed) + len(limited) == 60, {r.status_code for r in responses}
    # One bucket: the burst (10) plus one per second elapsed. Two buckets would let about 20 through.
    assert 10 <= len(allowed) <= 10 + int(elapsed) + 1, (len(allowed), elapsed)
    assert len({r.url.port for r in allowed}) == 2  # both gateways let some through, from the one bucket
    for r in responses:
        assert r.headers["X-RateLimit-Limit"] == "10"
        assert 0 <= int(r.headers["X-RateLimit-Remaining"]) <= 9
        assert int(r.headers["X-RateLimit-Reset"]) >= int(time.time() * 1000) - 60_000
    body = limited[0].json()
    assert body == {"statusCode": 429, "message": "Rate limit exceeded", "error": "Too Many Requests",
                    "retryAfter": int(limited[0].headers["Retry-After"])}
    assert limited[0].headers["X-RateLimit-Remaining"] == "0" and body["retryAfter"] == 1  # 1 token/s


async def test_the_v2_default_is_100_per_minute_per_user_across_both_gateways(two_gateways, infra, settings, tenant):
    token = issue_token(settings, tenant, "alice")
    responses, elapsed = await _hammer(two_gateways, "/api/v2/workflows?limit=1",
                                       {"Authorization": f"Bearer {token}"}, 130)
    allowed = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(allowed) + len(limited) == 130, {r.status_code for r in responses}
    assert 100 <= len(allowed) <= 100 + int(elapsed * 100 / 60) + 1, (len(allowed), elapsed)
    assert all(r.headers["X-RateLimit-Limit"] == "100" for r in responses)
    assert limited[0].json()["success"] is False and "100 requests per minute" in limited[0].json()["error"]
    assert int(limited[0].headers["Retry-After"]) >= 1
    # Another user of the same tenant has a bucket of their own.
    other = issue_token(settings, tenant, "bob")
    async with httpx.AsyncClient(base_url=two_gateways[1], headers={"Authorization": f"Bearer {other}"}) as c:
        r = await c.get("/api/v2/workflows?limit=1")
    assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "99"
