"""bench_growth.py, part 3: EventStore append and read latency with a near-empty events table vs a full one."""

from __future__ import annotations

import time
import uuid

import asyncpg

from bench.common import ceiling_event, pct
from libs.events.schemas import Metadata
from libs.events.order import cursor_at, read_all
from libs.events.store import EventStore

TENANT = "tgrowth"
CALLS = 300

# Streams of 10 events of one tenant (the one measured, so row-level security filters nothing out), event bodies
# shaped like a StepStarted.
_SEED = """
INSERT INTO events (event_id, stream_id, version, type, data, metadata, tenant_id)
SELECT gen_random_uuid(), 'seed-' || (g / 10)::text, g % 10 + 1, 'StepStarted',
       jsonb_build_object('type', 'StepStarted', 'run_id', gen_random_uuid(), 'step_id', 'step-' || (g % 10),
                          'attempt', 1, 'at', now()),
       '{"tenant_id": "tgrowth", "correlation_id": "seed", "actor": "bench"}'::jsonb, $1
FROM generate_series(0, $2 - 1) AS g
"""


class Side:
    """One database's store, the streams read from it, and the latencies measured on it."""

    def __init__(self, name: str, pool: asyncpg.Pool) -> None:
        self.name, self.pool = name, pool
        self.store = EventStore(pool, app_role="weft_app", projector=None)
        self.streams: list[str] = []
        self.ms: dict[str, list[float]] = {k: [] for k in OPERATIONS}
        self.head = 0

    async def one_round(self, i: int, meta: Metadata) -> None:
        """One call of each operation (the 10-event stream's append: 9 events first, untimed, then the 10th)."""
        sid = uuid.uuid4()
        await self._timed("append, new stream", self.store.append(f"new-{sid}", 0, [ceiling_event(sid, 0)], metadata=meta))
        got = await self._timed("read_stream, 10 events", self.store.read_stream(TENANT, self.streams[i % len(self.streams)]))
        assert len(got) == 10, len(got)
        async with self.pool.acquire() as conn:
            after = await cursor_at(conn, self.head - 100 - i)  # the global order's cursor there (untimed)
            await self._timed("read_all, 100 events near the head", read_all(conn, after, 100))
        await self.store.append(f"fill-{sid}", 0, [ceiling_event(sid, v) for v in range(9)], metadata=meta)
        await self._timed("append to a 10-event stream",
                          self.store.append(f"fill-{sid}", 9, [ceiling_event(sid, 9)], metadata=meta))

    async def _timed(self, key: str, call):
        t0 = time.perf_counter()
        result = await call
        self.ms[key].append((time.perf_counter() - t0) * 1e3)
        return result


OPERATIONS = ("append, new stream", "append to a 10-event stream", "read_stream, 10 events",
              "read_all, 100 events near the head")


async def measure_store(empty_dsn: str, full_dsn: str, seed_events: int) -> None:
    """Two databases on the same server, one near-empty and one seeded; calls alternate between them, so both
    see the same load from the rest of the machine."""
    sides = [Side("empty", await asyncpg.create_pool(empty_dsn, min_size=2, max_size=2)),
             Side("full", await asyncpg.create_pool(full_dsn, min_size=2, max_size=2))]
    empty, full = sides
    try:
        t0 = time.perf_counter()
        await full.pool.execute(_SEED, TENANT, seed_events)
        print(f"\n  seeded {seed_events} events (one INSERT ... SELECT generate_series) in {time.perf_counter() - t0:.1f} s")
        meta = Metadata(tenant_id=TENANT, correlation_id=str(uuid.uuid4()), actor="bench")
        for side in sides:
            for _ in range(30):  # streams written now; the full side also reads streams among the million
                sid = uuid.uuid4()
                await side.store.append(f"read-{sid}", 0, [ceiling_event(sid, v) for v in range(10)], metadata=meta)
                side.streams.append(f"read-{sid}")
            await side.pool.execute("VACUUM ANALYZE events")
        full.streams += [f"seed-{i}" for i in range(7, seed_events // 10, max(1, seed_events // 300))][:30]
        for side in sides:
            side.head = await side.pool.fetchval("SELECT max(global_position) FROM events")
            for i in range(30):  # warm-up: connections, prepared statements
                await side.one_round(i, meta)
            side.ms = {k: [] for k in OPERATIONS}
        for i in range(CALLS):
            for side in (sides if i % 2 == 0 else sides[::-1]):
                await side.one_round(i, meta)
        counts = [await side.pool.fetchval("SELECT count(*) FROM events") for side in sides]
        print(f"\n== store latency: {counts[1]} events in the table vs {counts[0]} ({CALLS} calls each, alternating"
              " between the two databases; ms; ratio = full / empty)")
        print(f"  {'operation':<38} {'empty p50':>9} {'p99':>7} {'full p50':>9} {'p99':>7} {'p50 ratio':>9} {'p99 ratio':>9}")
        for key in OPERATIONS:
            e, f = empty.ms[key], full.ms[key]
            print(f"  {key:<38} {pct(e, 50):9.3f} {pct(e, 99):7.3f} {pct(f, 50):9.3f} {pct(f, 99):7.3f}"
                  f" {pct(f, 50) / pct(e, 50):9.2f} {pct(f, 99) / pct(e, 99):9.2f}")
    finally:
        for side in sides:
            await side.pool.close()
