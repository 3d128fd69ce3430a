"""bench_growth.py, part 3: EventStore append and read latency with a near-empty events table vs a full one."""

from __future__ import annotations

import time
import uuid

import asyncpg

from bench.common import ceiling_event, pct
from libs.events.schemas import Metadata
from libs.events.store import EventStore, read_all

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


async def _latencies(store: EventStore, pool: asyncpg.Pool, label: str, read_streams: list[str]) -> dict[str, list[float]]:
    meta = Metadata(tenant_id=TENANT, correlation_id=str(uuid.uuid4()), actor="bench")
    out: dict[str, list[float]] = {k: [] for k in ("append, new stream", "append to a 10-event stream",
                                                   "read_stream, 10 events", "read_all, 100 events near the head")}
    head = await pool.fetchval("SELECT coalesce(max(global_position), 0) FROM events")
    for i in range(CALLS):
        sid = uuid.uuid4()
        t0 = time.perf_counter()
        await store.append(f"{label}-{sid}", 0, [ceiling_event(sid, 0)], metadata=meta)
        out["append, new stream"].append((time.perf_counter() - t0) * 1e3)
        stream = read_streams[i % len(read_streams)]
        t0 = time.perf_counter()
        got = await store.read_stream(TENANT, stream)
        out["read_stream, 10 events"].append((time.perf_counter() - t0) * 1e3)
        assert len(got) == 10, (stream, len(got))
        t0 = time.perf_counter()
        async with pool.acquire() as conn:
            await read_all(conn, head - 100 - i, 100)
        out["read_all, 100 events near the head"].append((time.perf_counter() - t0) * 1e3)
    # Fill one stream per call up to version 10 (9 events), then time the 10th: the append's version check reads
    # the stream's highest version.
    for i in range(CALLS):
        sid = uuid.uuid4()
        await store.append(f"{label}-fill-{sid}", 0, [ceiling_event(sid, v) for v in range(9)], metadata=meta)
        t0 = time.perf_counter()
        await store.append(f"{label}-fill-{sid}", 9, [ceiling_event(sid, 9)], metadata=meta)
        out["append to a 10-event stream"].append((time.perf_counter() - t0) * 1e3)
    return out


async def measure_store(dsn: str, seed_events: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2)
    try:
        store = EventStore(pool, app_role="weft_app", projector=None)
        meta = Metadata(tenant_id=TENANT, correlation_id=str(uuid.uuid4()), actor="bench")
        streams = []
        for _ in range(30):  # the streams read in both phases
            sid = uuid.uuid4()
            await store.append(f"read-{sid}", 0, [ceiling_event(sid, v) for v in range(10)], metadata=meta)
            streams.append(f"read-{sid}")
        await _latencies(store, pool, "warm", streams)  # warm-up: connections, prepared statements, the table
        await pool.execute("ANALYZE events")
        empty_n = await pool.fetchval("SELECT count(*) FROM events")
        empty = await _latencies(store, pool, "empty", streams)
        t0 = time.perf_counter()
        await pool.execute(_SEED, TENANT, seed_events)
        await pool.execute("VACUUM ANALYZE events")
        print(f"\n  seeded {seed_events} events (one INSERT ... SELECT generate_series, then VACUUM ANALYZE) in "
              f"{time.perf_counter() - t0:.1f} s")
        # the seeded streams too: a stream among the million, not only the ones read before
        streams_full = streams + [f"seed-{i}" for i in range(7, seed_events // 10, max(1, seed_events // 300))][:30]
        full_n = await pool.fetchval("SELECT count(*) FROM events")
        full = await _latencies(store, pool, "full", streams_full)
        print(f"\n== store latency: {full_n} events in the table vs {empty_n} ({CALLS} calls each, ms; ratio = full / empty)")
        print(f"  {'operation':<38} {'empty p50':>9} {'p99':>7} {'full p50':>9} {'p99':>7} {'p50 ratio':>9} {'p99 ratio':>9}")
        for key in empty:
            e50, e99, f50, f99 = pct(empty[key], 50), pct(empty[key], 99), pct(full[key], 50), pct(full[key], 99)
            print(f"  {key:<38} {e50:9.3f} {e99:7.3f} {f50:9.3f} {f99:7.3f} {f50 / e50:9.2f} {f99 / e99:9.2f}")
    finally:
        await pool.close()
