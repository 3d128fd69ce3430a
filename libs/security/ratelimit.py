"""Token-bucket rate limits: the pure bucket math, the response headers, and the store every gateway shares.

`take` is the reference: TAKE_SQL does the same integer arithmetic in one upsert of the client's row of
`rate_buckets` (migrations 009 and 026), so all gateway processes draw from one bucket (docs/decisions/0008).
Tokens are counted in millionths and time in microseconds, and the refill rate is a whole number per minute, so every
step is exact integer arithmetic: a client at exactly the rate gets exactly one token per request interval,
never a rounding short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec
import structlog

log = structlog.get_logger()
MICRO = 1_000_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Limit(msgspec.Struct, frozen=True):
    """A bucket of `burst` tokens refilled at `per_minute` tokens per minute (evenly, not once a minute)."""

    burst: int
    per_minute: int

    @property
    def fill_us(self) -> int:
        """How long an empty bucket takes to fill; a longer gap adds nothing more."""
        return _ceil_div(self.burst * MICRO * 60, self.per_minute)


class Bucket(msgspec.Struct, frozen=True):
    tokens: int  # millionths of a token
    at_us: int  # when `tokens` was last brought up to date


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: Limit
    tokens: int  # left after this request, millionths
    at_us: int

    @property
    def remaining(self) -> int:
        return self.tokens // MICRO

    @property
    def reset_ms(self) -> int:
        """When the bucket is full again (epoch milliseconds): the moment the limit has fully reset."""
        missing = self.limit.burst * MICRO - self.tokens
        return _ceil_div(self.at_us + _ceil_div(missing * 60, self.limit.per_minute), 1000)

    @property
    def retry_after_s(self) -> int:
        """Whole seconds until the next whole token, at least 1 (Retry-After is in seconds)."""
        missing = max(MICRO - self.tokens, 0)
        return max(1, _ceil_div(missing * 60, self.limit.per_minute * MICRO))

    def headers(self) -> dict[str, str]:
        """The contract's headers, for every response; Retry-After only on a refusal."""
        headers = {"X-RateLimit-Limit": str(self.limit.burst), "X-RateLimit-Remaining": str(self.remaining),
                   "X-RateLimit-Reset": str(self.reset_ms)}
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


def refill(limit: Limit, bucket: Bucket | None, now_us: int) -> Bucket:
    """The bucket brought up to `now_us`: full when new, never above the burst; a clock that went back
    (another process stamped a later time) refills nothing."""
    cap = limit.burst * MICRO
    if bucket is None:
        return Bucket(tokens=cap, at_us=now_us)
    elapsed = min(max(now_us - bucket.at_us, 0), limit.fill_us)
    return Bucket(tokens=min(cap, bucket.tokens + elapsed * limit.per_minute // 60),
                  at_us=max(bucket.at_us, now_us))


def take(limit: Limit, bucket: Bucket | None, now_us: int) -> tuple[Decision, Bucket]:
    """One request: consume a token if there is a whole one. A refused request consumes nothing."""
    current = refill(limit, bucket, now_us)
    allowed = current.tokens >= MICRO
    after = Bucket(tokens=current.tokens - MICRO, at_us=current.at_us) if allowed else current
    return Decision(allowed=allowed, limit=limit, tokens=after.tokens, at_us=after.at_us), after


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class MemoryBuckets:
    """Buckets in one process on an injectable clock: the reference the property tests drive."""

    def __init__(self, clock: Callable[[], int] = wall_clock_us):
        self.clock, self.buckets = clock, {}

    def take(self, key: str, limit: Limit) -> Decision:
        decision, self.buckets[key] = take(limit, self.buckets.get(key), self.clock())
        return decision


# The same step as `take`, in SQL: one call of migration 026's weft_take_rate_token (the one copy of the
# arithmetic in SQL, an upsert of the client's row), so one round trip. It runs as that function's owner,
# not the caller: the gateway's app login names buckets before any tenant is known (docs/decisions/0115).
TAKE_SQL = "SELECT allowed, tokens, at_us FROM weft_take_rate_token($1, $2, $3::integer, $4::integer, $5::bigint)"
SWEEP_SQL = "SELECT weft_sweep_rate_buckets($1::bigint)"


def decision_of(row: Any, limit: Limit) -> Decision:
    return Decision(allowed=row["allowed"], limit=limit, tokens=row["tokens"], at_us=row["at_us"])


class SharedBuckets:
    """Buckets in Postgres (the unlogged `rate_buckets` table), one per client across every gateway.

    `clock` None uses the database's clock, so processes on hosts with skewed clocks still refill alike;
    tests pass a controllable clock (microseconds since the epoch)."""

    def __init__(self, pool: asyncpg.Pool, clock: Callable[[], int] | None = None, timeout_s: float = 2.0):
        self.pool, self.clock, self.timeout_s = pool, clock, timeout_s

    async def take(self, key: str, tenant_id: str, limit: Limit) -> Decision:
        now = self.clock() if self.clock is not None else None
        row = await self.pool.fetchrow(TAKE_SQL, key, tenant_id, limit.burst, limit.per_minute, now,
                                       timeout=self.timeout_s)
        return decision_of(row, limit)

    async def sweep(self) -> int:
        """Delete buckets idle long enough to be full again: a missing bucket starts full, so nothing
        changes for their clients, and the table holds only recently active ones. A request racing the
        delete either refreshes the row first (the DELETE re-checks it and keeps it) or inserts anew."""
        now = self.clock() if self.clock is not None else None
        return await self.pool.fetchval(SWEEP_SQL, now, timeout=30)

    async def sweep_forever(self, every_s: float = 600.0) -> None:
        """The gateway's background sweep (every gateway runs one; they do not conflict)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sweep()
            except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError) as exc:
                log.warning("rate_bucket_sweep_failed", error=f"{type(exc).__name__}: {exc}")
