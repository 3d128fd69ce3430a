"""What the API-key check and the rate-limit decision add to a request, and the shared bucket store.

    .venv/bin/python bench/bench_public_api.py [--n 3000] [--concurrency 8]

Starts its own Postgres (fsync on, as `make up` runs it) and nats-server from the wheels in a temporary
directory, migrates, creates an API key whose limit is never reached, and measures in one run:

1. Added latency (the goal: under 1 ms at p50). A uvicorn process (configured as the gateway's) serves one
   cheap handler three ways: /plain/ping (no middleware: the baseline), /api/v1/public/ping (the public API's
   middleware: key lookup + token bucket, services/gateway/public/auth.py) and /api/v2/ping (the v2
   per-user limit: JWT check + token bucket, services/gateway/ratelimit.py). One keep-alive connection,
   one request in flight, the three interleaved so each sees the same machine; p50/p99 per route and the
   p50 differences (and the median of the per-round differences); then the middleware's own Python work
   with the database answer stubbed out.
2. The database part alone, from this process: SELECT 1 (the floor of a round trip), the key lookup, the
   lookup with the bucket; then the shared store: TAKE_SQL (Postgres, one upsert) for 1 caller and for
   --concurrency callers on one bucket (they serialise on its row lock), against the alternative a NATS KV
   compare-and-set bucket would need (get + update with the expected revision, retried on conflict).
3. What migration 026 costs (docs/decisions/0115): admission through weft_admit_api_key and a bucket take
   through weft_take_rate_token (SECURITY DEFINER plpgsql functions) against the statements they replaced,
   run inline as the owner (the baseline; an app login finds no key with the inline admission), and the
   functions again from an app login's pool.
Everything started here is stopped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import nats
from nats.js.api import StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_runs import HttpConn  # noqa: E402
from bench.common import pct, verdict  # noqa: E402
from libs.security import apikeys  # noqa: E402
from libs.security.auth import issue_token  # noqa: E402
from libs.events.db import create_pool, tenant_transaction  # noqa: E402
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402
from libs.events.migrate import migrate  # noqa: E402
from libs.security.ratelimit import MICRO, TAKE_SQL, Bucket, Limit, take  # noqa: E402
from libs.events.settings import load_settings  # noqa: E402

TENANT = "tbench"
NEVER = {"burst": 1_000_000, "per_minute": 60_000_000}  # a key the benchmark never exhausts
# The baseline of part 3: admission as one inline statement, as it was before migration 026.
_REFILLED = ("least(EXCLUDED.burst::bigint * 1000000, b.tokens + least(greatest(EXCLUDED.at_us - b.at_us, 0),"
             " (EXCLUDED.burst::bigint * 60000000 + EXCLUDED.per_minute - 1) / EXCLUDED.per_minute)"
             " * EXCLUDED.per_minute / 60)")
PRE_026_ADMIT_SQL = (
    "WITH k AS (SELECT id, tenant_id, name, workflow_ids::text[] AS workflow_ids, active, rate_burst,"
    " rate_per_minute, expires_at IS NOT NULL AND expires_at <= clock_timestamp() AS expired"
    " FROM api_keys WHERE key_hash = $1),"
    " r AS (INSERT INTO rate_buckets AS b (bucket, tenant_id, burst, per_minute, tokens, at_us, allowed)"
    " SELECT 'key:' || k.id::text, k.tenant_id, k.rate_burst, k.rate_per_minute,"
    " k.rate_burst::bigint * 1000000 - 1000000, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, true"
    f" FROM k ON CONFLICT (bucket) DO UPDATE SET allowed = {_REFILLED} >= 1000000,"
    f" tokens = {_REFILLED} - CASE WHEN {_REFILLED} >= 1000000 THEN 1000000 ELSE 0 END,"
    " at_us = greatest(b.at_us, EXCLUDED.at_us), burst = EXCLUDED.burst, per_minute = EXCLUDED.per_minute"
    " RETURNING b.allowed, b.tokens, b.at_us)"
    " SELECT k.*, r.allowed, r.tokens, r.at_us FROM k, r"
)
PRE_026_TAKE_SQL = (
    "INSERT INTO rate_buckets AS b (bucket, tenant_id, burst, per_minute, tokens, at_us, allowed)"
    " VALUES ($1, $2, $3::integer, $4::integer, $3::integer * 1000000::bigint - 1000000,"
    " (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, true)"
    f" ON CONFLICT (bucket) DO UPDATE SET allowed = {_REFILLED} >= 1000000,"
    f" tokens = {_REFILLED} - CASE WHEN {_REFILLED} >= 1000000 THEN 1000000 ELSE 0 END,"
    " at_us = greatest(b.at_us, EXCLUDED.at_us), burst = EXCLUDED.burst, per_minute = EXCLUDED.per_minute"
    " RETURNING b.allowed, b.tokens, b.at_us"
)


# -- the server process ------------------------------------------------------------------------------------


def serve(port: int, dsn: str) -> None:
    """The three routes over one handler body, with the production middlewares."""
    from contextlib import asynccontextmanager

    from litestar import Litestar, Router, get

    from libs.events.db import create_pool
    from libs.security.ratelimit import SharedBuckets
    from libs.runtime.service import serve as uvicorn_serve
    from services.gateway.public.auth import api_key_middleware
    from services.gateway.ratelimit import v2_rate_limit_middleware

    settings = load_settings({}, database_url=dsn, port=port, v2_rate_limit_per_minute=10_000_000)

    def ping_handler():
        @get("/ping", sync_to_thread=False)
        def ping() -> dict[str, bool]:
            return {"ok": True}

        return ping

    @asynccontextmanager
    async def lifespan(app: Litestar):
        pool = await create_pool(settings)
        app.state.ctx = SimpleNamespace(pool=pool)
        app.state.buckets = SharedBuckets(pool)
        try:
            yield
        finally:
            await pool.close()

    app = Litestar(route_handlers=[
        Router(path="/plain", route_handlers=[ping_handler()]),
        # The middleware acts on /api/v1/public paths only (it is app-wide in the gateway): under /keyed it
        # checked nothing and this row measured no key check at all.
        Router(path="/api/v1/public", route_handlers=[ping_handler()], middleware=[api_key_middleware]),
        Router(path="/api/v2", route_handlers=[ping_handler()], middleware=[v2_rate_limit_middleware]),
    ], lifespan=[lifespan])
    app.state.settings = settings
    uvicorn_serve(app, settings)


# -- 1. added latency over HTTP -------------------------------------------------------------------------------


def wait_port(port: int, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/plain/ping", timeout=1):  # noqa: S310
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"bench server not up on {port}")


async def added_latency(port: int, key: str, token: str, n: int) -> bool:
    routes = {"plain (baseline)": ("/plain/ping", key), "API key + bucket": ("/api/v1/public/ping", key),
              "v2 JWT + bucket": ("/api/v2/ping", token)}
    conns = {name: HttpConn(port, credential) for name, (_, credential) in routes.items()}
    samples: dict[str, list[float]] = {name: [] for name in routes}
    try:
        for i in range(n + 300):  # the first 300 rounds warm connections, statements and caches
            for name, (path, _) in routes.items():
                started = time.perf_counter()
                status, _ = await conns[name].request("GET", path)
                elapsed = (time.perf_counter() - started) * 1000
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}")
                if i >= 300:
                    samples[name].append(elapsed)
    finally:
        for conn in conns.values():
            await conn.close()
    plain = samples["plain (baseline)"]
    print(f"\n== added latency per request (n={n} per route, 1 in flight, interleaved)")
    print(f"  {'route':<18} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p50 added':>10} {'paired':>8}")
    ok = True
    for name, values in samples.items():
        added = pct(values, 50) - pct(plain, 50)
        # The median of per-round differences (same round, back to back): less sensitive to other load.
        paired = pct([v - b for v, b in zip(values, plain, strict=True)], 50)
        print(f"  {name:<18} {pct(values, 50):8.3f} {pct(values, 90):8.3f} {pct(values, 99):8.3f} {added:10.3f}"
              f" {paired:8.3f}")
        if name != "plain (baseline)":
            ok = ok and added < 1.0
    print(f"  goal: key check + rate-limit decision add < 1 ms at p50: {verdict(ok)}")
    return ok


async def middleware_cpu(key: str, n: int = 20000) -> None:
    """The middleware's own Python work per request, with the database answer stubbed out: what remains
    of the added latency beyond one round trip (and, on a busy machine, waiting for a CPU after it)."""
    from services.gateway.public.auth import api_key_middleware

    row = {"id": uuid.uuid4(), "tenant_id": TENANT, "name": "bench", "workflow_ids": [str(uuid.uuid4())],
           "active": True, "expired": False, "rate_burst": 10, "rate_per_minute": 60, "allowed": True,
           "tokens": 5 * MICRO, "at_us": time.time_ns() // 1000}

    class AnsweringPool:
        async def fetchrow(self, *_args, **_kwargs):
            return row

    async def handler(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def nothing(*_args) -> None:
        return None

    app = SimpleNamespace(state=SimpleNamespace(ctx=SimpleNamespace(pool=AnsweringPool())))
    wrapped = api_key_middleware(handler)

    def scope() -> dict:
        return {"type": "http", "path": "/api/v1/public/ping", "headers": [(b"authorization", f"Bearer {key}".encode())],
                "litestar_app": app}

    timings = {}
    for label, fn in (("handler", handler), ("middleware + handler", wrapped)):
        for _ in range(2000):
            await fn(scope(), nothing, nothing)
        started = time.perf_counter()
        for _ in range(n):
            await fn(scope(), nothing, nothing)
        timings[label] = (time.perf_counter() - started) / n * 1e6
    print(f"  middleware Python work, database answer stubbed: "
          f"{timings['middleware + handler'] - timings['handler']:.1f} us per request")


# -- 2. the bucket store --------------------------------------------------------------------------------------


async def timed_ops(callers: int, per_caller: int, one) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def caller() -> None:
        for _ in range(per_caller):
            started = time.perf_counter()
            await one()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies, time.perf_counter() - started


async def definer_cost(dsn: str, owner_pool: asyncpg.Pool, key: str, n: int, rounds: int = 20) -> None:
    """Part 3: admission and a bucket take inline (the pre-026 statements, the baseline) and through the
    functions, as the owner and as an app login; interleaved in rounds, each row's p50 over all rounds and the
    median of the per-round p50 ratios against the baseline (robust to a machine whose load drifts)."""
    login = f"wbench_{uuid.uuid4().hex[:8]}"
    await owner_pool.execute(f"CREATE ROLE {login} LOGIN IN ROLE weft_app")
    app_dsn = f"postgresql://{login}@{dsn.split('@', 1)[1]}"
    app_pool = await create_pool(load_settings({}, database_url=app_dsn), min_size=1, max_size=1)  # as the gateway's
    key_hash = apikeys.hash_key(key)
    burst, per_minute = NEVER["burst"], NEVER["per_minute"]
    try:
        assert await owner_pool.fetchrow(PRE_026_ADMIT_SQL, key_hash) is not None
        assert await app_pool.fetchrow(PRE_026_ADMIT_SQL, key_hash) is None  # why 026 exists
        groups = {
            "admission": (("pre-026 inline statement, owner (baseline)",
                           lambda: owner_pool.fetchrow(PRE_026_ADMIT_SQL, key_hash)),
                          ("weft_admit_api_key, owner", lambda: apikeys.admit(owner_pool, key)),
                          ("weft_admit_api_key, app login", lambda: apikeys.admit(app_pool, key))),
            "a bucket take": (("pre-026 inline upsert, owner (baseline)",
                               lambda: owner_pool.fetchrow(PRE_026_TAKE_SQL, "bench-take", TENANT, burst, per_minute)),
                              ("weft_take_rate_token, owner",
                               lambda: owner_pool.fetchrow(TAKE_SQL, "bench-take", TENANT, burst, per_minute, None)),
                              ("weft_take_rate_token, app login",
                               lambda: app_pool.fetchrow(TAKE_SQL, "bench-take", TENANT, burst, per_minute, None))),
        }
        for group, rows in groups.items():
            print(f"\n== {group}: inline statement vs migration 026's definer function"
                  f" (n={n} per row, {rounds} interleaved rounds)")
            for _, one in rows:
                await timed_ops(1, 200, one)
            samples: dict[str, list[float]] = {label: [] for label, _ in rows}
            ratios: dict[str, list[float]] = {label: [] for label, _ in rows}
            for _ in range(rounds):
                p50s = {}
                for label, one in rows:
                    values, _ = await timed_ops(1, max(n // rounds, 1), one)
                    samples[label] += values
                    p50s[label] = pct(values, 50)
                for label in p50s:
                    ratios[label].append(p50s[label] / p50s[rows[0][0]])
            for label, values in samples.items():
                print(f"  {label:<46} p50 {pct(values, 50):6.3f} ms   p99 {pct(values, 99):6.3f} ms"
                      f"   median round ratio {pct(ratios[label], 50):5.2f}x")
    finally:
        await app_pool.close()
        await owner_pool.execute(f"DROP OWNED BY {login}; DROP ROLE {login}")


async def store_comparison(dsn: str, nats_url: str, n: int, concurrency: int, bench_key: str) -> None:
    limit = Limit(burst=NEVER["burst"], per_minute=NEVER["per_minute"])
    # The pool the gateway uses (no reset query on release).
    pool = await create_pool(load_settings({}, database_url=dsn), min_size=concurrency, max_size=concurrency)
    nc = await nats.connect(nats_url)
    try:
        # Memory storage: no fsync per write, the fair match for the UNLOGGED table.
        kv = await nc.jetstream().create_key_value(bucket="bench_rate", history=1, storage=StorageType.MEMORY)
        retries = 0

        async def pg_take() -> None:
            await pool.fetchrow(TAKE_SQL, "bench", TENANT, limit.burst, limit.per_minute, None)

        async def kv_take() -> None:
            # The NATS KV alternative: read the bucket, decide with the same pure function, write it back
            # only if nobody wrote since (expected revision); on a conflict, read again.
            nonlocal retries
            while True:
                try:
                    entry = await kv.get("bench")
                    bucket = Bucket(**json.loads(entry.value))
                    revision = entry.revision
                except KeyNotFoundError:
                    bucket, revision = None, None
                _, after = take(limit, bucket, time.time_ns() // 1000)
                value = json.dumps({"tokens": after.tokens, "at_us": after.at_us}).encode()
                try:
                    if revision is None:
                        await kv.create("bench", value)
                    else:
                        await kv.update("bench", value, last=revision)
                    return
                except KeyWrongLastSequenceError:  # someone else wrote first (create: the key appeared)
                    retries += 1

        probe = apikeys.generate_key()  # unknown key: the lookup alone, no bucket
        key = bench_key

        async def select_one() -> None:
            await pool.fetchval("SELECT 1")

        print(f"\n== the database part of the key check, from this process (n={n} per row, gateway's pool)")
        for label, one in (("SELECT 1 (a round trip, the floor)", select_one),
                           ("admit(): unknown key (lookup only)", lambda: apikeys.admit(pool, probe)),
                           ("admit(): key + bucket (what a request does)", lambda: apikeys.admit(pool, key))):
            await timed_ops(1, 200, one)
            values, _ = await timed_ops(1, n, one)
            print(f"  {label:<46} p50 {pct(values, 50):6.3f} ms   p99 {pct(values, 99):6.3f} ms")

        await definer_cost(dsn, pool, key, n)

        print(f"\n== one shared bucket, from this process (n={n} per row)")
        print(f"  {'store':<48} {'p50 ms':>8} {'p99 ms':>8} {'ops/s':>8} {'retries/op':>10}")
        stores = (("Postgres upsert (one statement)", pg_take), ("NATS KV (memory) get + CAS update", kv_take))
        for label, one in stores:
            for callers in (1, concurrency):
                retries = 0
                await timed_ops(1, 200, one)  # warm up
                retries = 0
                values, wall = await timed_ops(callers, max(n // callers, 1), one)
                print(f"  {label + f', {callers} caller(s)':<48} {pct(values, 50):8.3f} {pct(values, 99):8.3f}"
                      f" {len(values) / wall:8.0f} {retries / len(values):10.2f}")
    finally:
        await nc.drain()
        await pool.close()


async def make_key(dsn: str) -> str:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        wid = uuid.uuid4()
        async with tenant_transaction(pool, TENANT, "weft_app") as conn:
            await conn.execute(
                "INSERT INTO workflows (id, tenant_id, name, definition, version, status, created_by, created_at,"
                " updated_at, stream_version)"
                " VALUES ($1, $2, 'bench', '{}'::jsonb, '1', 'active', 'b', now(), now(), 1)",
                wid, TENANT)
            key, _ = await apikeys.create_key(conn, tenant_id=TENANT, name="bench", workflow_ids=[wid],
                                              created_by="bench", burst=NEVER["burst"],
                                              per_minute=NEVER["per_minute"], monthly_limit=None)
        return key
    finally:
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000,
                        help="timed requests per route / store operations (default 3000)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent callers on one bucket (default 8)")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DSN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return 0

    root = Path(tempfile.mkdtemp(prefix="weft-bench-public-"))
    pg = EmbeddedPostgres(root / "pg", free_port(), root / "postgres.log")
    nats_srv = EmbeddedNats(root / "nats", free_port())
    server: subprocess.Popen | None = None
    ok = False
    try:
        pg.start()
        pg.create_database("weft_bench")
        nats_srv.start()
        dsn = pg.dsn("weft_bench")
        asyncio.run(migrate(dsn))
        key = asyncio.run(make_key(dsn))
        token = issue_token(load_settings({}), TENANT, "bench-user")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")} | {"WEFT_LOG_LEVEL": "warning"}
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), dsn], env=env,
                                  stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        wait_port(port)
        met = asyncio.run(added_latency(port, key, token, args.n))
        asyncio.run(middleware_cpu(key))
        asyncio.run(store_comparison(dsn, nats_srv.url, args.n, args.concurrency, key))
        print(f"\nbucket in Postgres: rate_buckets is UNLOGGED (no WAL, no fsync per decision); tokens in 1/{MICRO}")
        ok = True
        if not met:
            print("\n(the goal was not met in this run; see the table above)")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        nats_srv.stop()
        pg.stop()
        if not ok:
            print((root / "server.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
