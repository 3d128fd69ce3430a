"""Append throughput: EventStore.append against raw asyncpg INSERTs into the same events table.

    .venv/bin/python bench/bench_append.py [--n 2000] [--writers 8]

Starts its own Postgres from the pgserver wheel (fsync on, as `make up` runs it) in a temporary
directory, migrates it, and measures in one run:

  store   single-event EventStore.append calls (tenant transaction as weft_app with row-level
          security, expected-version check, NOTIFY; no lock: docs/decisions/0032; no projector)
  raw     single-row INSERTs of equivalent rows (same columns and payload sizes) as the superuser,
          one autocommit statement each: the floor any event store on this table pays per commit

each with one writer and with --writers concurrent writers. Every append/INSERT is its own commit. It prints
the ratios issue #14 aims at: store appends with --writers writers >= 3x with one, and >= 80% of raw INSERTs
with --writers writers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import measure_appends, print_append_aims, raw_writer, store_writer  # noqa: E402
from deploy.local.embedded import EmbeddedPostgres, free_port  # noqa: E402
from libs.events.db import create_pool  # noqa: E402
from libs.events.migrate import migrate  # noqa: E402
from libs.events.settings import load_settings  # noqa: E402
from libs.events.store import EventStore  # noqa: E402

STREAM_LENGTH = 20  # events per stream before a writer moves to a fresh stream (a run-sized stream)
TENANT = "tbench"


async def bench(dsn: str, n: int, writers: int) -> None:
    await migrate(dsn)
    # The services' pool (libs/events/db.create_pool): its release runs no reset query, a round trip per append
    # that asyncpg's default pool would add to every store append here and to no raw INSERT (one held connection).
    pool = await create_pool(load_settings({}, database_url=dsn), min_size=writers + 1, max_size=writers + 1)
    try:
        store = EventStore(pool, app_role="weft_app", projector=None)
        # Warm up connections, prepared statements and the table before timing anything.
        await store_writer(store, 100, tenant=TENANT)
        await raw_writer(pool, 100, tenant=TENANT)
        print(f"single-event appends, each its own commit (n={n})", flush=True)
        rates = await measure_appends(store, pool, n, writers, tenant=TENANT, stream_length=STREAM_LENGTH)
        print("ratios (same run)", flush=True)
        print_append_aims(rates, writers)
        total = await pool.fetchval("SELECT count(*) FROM events")
        print(f"events table rows at the end: {total}", flush=True)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="appends per measurement (default 2000)")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers, more than 1 (default 8)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="weft-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", free_port(), Path(tmp) / "postgres.log")
        try:
            started = time.perf_counter()
            pg.start()
            pg.create_database("weft_bench")
            print(f"postgres ready on port {pg.port} in {time.perf_counter() - started:.1f} s", flush=True)
            asyncio.run(bench(pg.dsn("weft_bench"), args.n, args.writers))
        finally:
            pg.stop()
            print("postgres stopped", flush=True)


if __name__ == "__main__":
    main()
