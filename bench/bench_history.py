"""GET /api/history's queries with 100,000 history rows for one user (A's target: history fetch under 500 ms).

    .venv/bin/python bench/bench_history.py [--rows 100000] [--n 50]

Starts its own Postgres (fsync on, as `make up` runs it) from the wheel in a temporary directory, migrates,
and fills the history read model: --rows rows for the measured user (varied commands, 80% completed, 15%
failed, 5% cancelled, spread over a year) and as many again for 20 other users of the tenant and another
tenant. Then it times the history use case (services/gateway/core/history.py: the page and its total, in one
tenant transaction as the app role under row-level security, exactly what the route runs) for each filter
shape, --n times each, interleaved, next to the floor measured in the same run: an empty tenant transaction
(SELECT 1). Prints p50/p95 per shape, the ratio to the floor, and the 500 ms verdict on p95.
Everything started here is stopped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import pct, verdict  # noqa: E402
from deploy.local.embedded import EmbeddedPostgres, free_port  # noqa: E402
from libs.events.db import create_pool  # noqa: E402
from libs.events.migrate import migrate  # noqa: E402
from libs.events.settings import load_settings  # noqa: E402
from libs.events.store import EventStore  # noqa: E402
from libs.security.auth import Principal  # noqa: E402
from services.gateway.core import Core  # noqa: E402
from services.gateway.core import history  # noqa: E402

TENANT, USER = "tbench", "bench-user"
TARGET_MS = 500.0

# Commands built from these words: each verb and object appears in a known share of the rows.
_FILL = """
INSERT INTO history (id, tenant_id, user_id, workflow_id, command, status, last_run_id, created_at, executed_at,
                     finished_at)
SELECT id, $1, $2 || CASE WHEN $3 > 1 THEN '-' || (i % $3)::text ELSE '' END, id,
       (ARRAY['Send a summary of', 'Archive', 'Forward', 'Label', 'Count'])[1 + i % 5] || ' my ' ||
       (ARRAY['unread emails', 'invoices', 'meeting notes', 'sales reports', 'support tickets', 'newsletters',
              'calendar invites'])[1 + i % 7] || ' to ' || 'user' || (i % 997)::text || '@example.com',
       CASE WHEN i % 20 = 0 THEN 'cancelled' WHEN i % 20 < 4 THEN 'failed' ELSE 'completed' END,
       id, at, at, at + interval '3 seconds'
FROM (SELECT gen_random_uuid() AS id, i, now() - (i * interval '5 minutes') AS at
      FROM generate_series(1, $4) AS i) g
"""


async def fill(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_FILL, TENANT, USER, 1, rows)
        await conn.execute(_FILL, TENANT, "other", 20, rows)
        await conn.execute(_FILL, "tother", USER, 1, rows)
        # The projection keeps these totals row by row; the bulk fill counts them once.
        await conn.execute("INSERT INTO history_counts (tenant_id, user_id, status, n)"
                           " SELECT tenant_id, user_id, status, count(*) FROM history GROUP BY 1, 2, 3")
        await conn.execute("VACUUM ANALYZE history")  # what autovacuum does after a bulk load
    finally:
        await conn.close()


async def measure(dsn: str, n: int) -> bool:
    settings = load_settings({}, database_url=dsn)
    pool = await create_pool(settings, min_size=1, max_size=2)
    store = EventStore(pool, app_role=settings.db_app_role)
    core = Core(store=store, dispatcher=None, bus=None, settings=settings)  # type: ignore[arg-type]
    me = Principal(tenant_id=TENANT, user_id=USER)
    week_ago = datetime.now(UTC) - timedelta(days=7)

    async def floor() -> None:
        async with store.tenant_transaction(TENANT) as conn:
            await conn.fetchval("SELECT 1")

    shapes = {
        "floor: empty tenant transaction": floor,
        "first page (20)": lambda: history.list_page(core, me),
        "page at offset 10,000": lambda: history.list_page(core, me, offset=10_000),
        "status=failed": lambda: history.list_page(core, me, status="failed"),
        "search 'invoice' (1 in 7)": lambda: history.list_page(core, me, search="invoice"),
        "search 'user42@example.com'": lambda: history.list_page(core, me, search="user42@example.com"),
        "search + status + week": lambda: history.list_page(core, me, search="forward invoices", status="success",
                                                            start=week_ago),
        "last 7 days": lambda: history.list_page(core, me, start=week_ago),
    }
    times: dict[str, list[float]] = {name: [] for name in shapes}
    try:
        for fn in shapes.values():  # warm the plans and the cache once
            await fn()
        for _ in range(n):
            for name, fn in shapes.items():
                started = time.perf_counter()
                await fn()
                times[name].append((time.perf_counter() - started) * 1000)
        total = (await history.list_page(core, me)).total
    finally:
        await pool.close()
    base = pct(times["floor: empty tenant transaction"], 50)
    print(f"\nhistory rows for the user: {total:,} (and as many for other users and another tenant)")
    print(f"{'query shape':34} {'p50 ms':>9} {'p95 ms':>9} {'p50 / floor':>12}")
    worst = 0.0
    for name, values in times.items():
        p50, p95 = pct(values, 50), pct(values, 95)
        if not name.startswith("floor"):
            worst = max(worst, p95)
        print(f"{name:34} {p50:9.2f} {p95:9.2f} {p50 / base:12.1f}")
    met = worst < TARGET_MS
    print(f"\nworst p95 {worst:.1f} ms against A's {TARGET_MS:.0f} ms history target: {verdict(met)}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="weft-bench-history-"))
    pg = EmbeddedPostgres(root / "pg", free_port(), root / "postgres.log")
    try:
        pg.start()
        pg.create_database("weft_bench")
        dsn = pg.dsn("weft_bench")
        asyncio.run(migrate(dsn))
        started = time.perf_counter()
        asyncio.run(fill(dsn, args.rows))
        print(f"filled {3 * args.rows:,} history rows in {time.perf_counter() - started:.1f} s")
        asyncio.run(measure(dsn, args.n))
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
