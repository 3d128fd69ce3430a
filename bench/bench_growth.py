"""How cost grows with work (issue 14): every measure printed as a ratio to a small baseline of the same run.

    .venv/bin/python bench/bench_growth.py [--steps 3,30,300] [--rows 100,1000] [--listing-runs 100000]
                                           [--store-events 1000000] [--skip runs,listing,store]

1. Runs. Postgres, nats-server and gateway, planner, executor, relay as processes (bench/common.py). Chains of
   `noop` steps (a -> b -> ..., each `input_from` the previous) and one `for_each` over the run's input rows
   (`${inputs.rows}`, a `noop` per row echoing `${item}`). Runs one at a time, submitted over HTTP (v2 execute)
   and timed to their RunCompleted seen on NATS. Per shape: wall ms per run, CPU ms per run of every process
   (psutil: Postgres = postmaster + backends), events per run, then per step (or row) both as a ratio to the
   first chain's per-step cost. A ratio that climbs with the step count is a cost growing faster than the work.
2. Listing. Two workflows; the runs read model gets --listing-runs rows for one and 100 for the other, INSERTed
   directly with generate_series (the rows the runs projection writes for finished runs: the listing reads only
   that table; the projection itself is measured by part 1), then VACUUM ANALYZE. Then the endpoints a user
   lists runs with, each timed 30 times after warm-up, the two workflows' requests alternating: v2 first page,
   v2 deepest page by offset, v2 filtered by status, the console's workflow detail (its 200 newest runs); the
   public API (D) lists no runs. Ratio: big / small. Then 3-step runs of each workflow, alternating (starting
   one inserts its runs row, numbered after the workflow's last run).
3. Store, in two databases of their own on the same server: one near-empty, one seeded with one INSERT ...
   SELECT generate_series of --store-events events (10-event streams of the tenant measured). Latency per call
   of EventStore.append (1 event, a new stream; the 10th event of a stream), read_stream (a 10-event stream) and
   read_all (100 events near the head), calls alternating between the two databases so both see the same
   load from the rest of the machine. Ratio: full / empty.
Everything started here is stopped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import nats
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_runs import Completions, CpuMeter, HttpConn, wait_relay_caught_up  # noqa: E402
from bench.common import pct, start_services, stop_all  # noqa: E402
from bench.growth_store import measure_store  # noqa: E402
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402
from libs.events.migrate import migrate  # noqa: E402
from libs.events.settings import load_settings  # noqa: E402
from libs.security.auth import issue_token  # noqa: E402

TENANT = "tgrowth"
SERVICES = ("gateway", "planner", "executor", "relay")
COMPLETION_TIMEOUT_S = 180.0


def chain(n: int) -> dict:
    nodes = [{"id": "s0", "type": "noop"}]
    nodes += [{"id": f"s{i}", "type": "noop", "input_from": f"s{i - 1}"} for i in range(1, n)]
    return {"nodes": nodes, "concurrency": "unlimited"}


FOR_EACH = {"nodes": [{"id": "rows", "type": "for_each", "config": {
    "items": "${inputs.rows}", "step": {"type": "noop", "config": {"message": "${item}"}}}}],
    "concurrency": "unlimited"}


class Shape:
    def __init__(self, label: str, units: int, unit: str, definition: dict, inputs: dict, runs: int):
        self.label, self.units, self.unit, self.definition, self.inputs, self.runs = label, units, unit, definition, inputs, runs
        self.wall_ms: list[float] = []
        self.cpu: dict[str, float] = {}
        self.events = 0.0

    @property
    def cpu_ms(self) -> float:  # platform processes only, per run
        return sum(v for k, v in self.cpu.items() if not k.startswith("bench")) / self.runs * 1000


async def create_workflow(http: HttpConn, name: str, definition: dict) -> str:
    status, body = await http.request("POST", "/api/v2/workflows", json.dumps(
        {"name": name, "definition": definition}).encode())
    if status != 201:
        raise RuntimeError(f"creating {name}: HTTP {status} {body[:300]!r}")
    return json.loads(body)["workflow"]["id"]


async def run_once(http: HttpConn, completions: Completions, workflow_id: str, inputs: dict) -> tuple[str, float]:
    t0 = time.perf_counter()
    status, body = await http.request("POST", f"/api/v2/workflows/{workflow_id}/execute",
                                      json.dumps({"inputs": inputs}).encode())
    if status != 201:
        raise RuntimeError(f"execute: HTTP {status} {body[:300]!r}")
    rid = json.loads(body)["run"]["id"]
    seen = await completions.wait(rid, COMPLETION_TIMEOUT_S)
    if seen is None or seen[1] != "RunCompleted":
        raise RuntimeError(f"run {rid}: {seen}")
    return rid, (seen[0] - t0) * 1000


async def measure_shape(http, completions, admin, meter: CpuMeter, shape: Shape) -> None:
    workflow_id = await create_workflow(http, f"growth {shape.label}", shape.definition)
    await run_once(http, completions, workflow_id, shape.inputs)  # warm-up: imports, prepared statements, caches
    await asyncio.sleep(0.5)
    before, rids = meter.snapshot(), []
    for _ in range(shape.runs):
        rid, ms = await run_once(http, completions, workflow_id, shape.inputs)
        rids.append(rid)
        shape.wall_ms.append(ms)
    shape.cpu, _ = CpuMeter.delta(before, meter.snapshot())
    shape.events = await admin.fetchval("SELECT count(*) FROM events WHERE stream_id = ANY($1::text[])",
                                        [f"run-{r}" for r in rids]) / shape.runs
    per = {k: v / shape.runs * 1000 for k, v in shape.cpu.items() if v > 0}
    print(f"  {shape.label:<22} {shape.runs:>3} runs  wall p50 {pct(shape.wall_ms, 50):8.1f} ms  CPU {shape.cpu_ms:8.1f} ms"
          f"  {shape.events:6.0f} events  | " + ", ".join(f"{k.split(' ')[0]} {v:.1f}" for k, v in
                                                           sorted(per.items(), key=lambda kv: -kv[1])), flush=True)


def print_runs(shapes: list[Shape]) -> None:
    base = shapes[0]
    b_wall, b_cpu = pct(base.wall_ms, 50) / base.units, base.cpu_ms / base.units
    print(f"\n== runs: per {base.unit} and per row, as a ratio to the {base.label} run's per-step cost (1.00 = linear)")
    print(f"  {'shape':<22} {'wall ms/unit':>12} {'CPU ms/unit':>12} {'events/unit':>12} {'wall ratio':>10} {'CPU ratio':>10}")
    for s in shapes:
        wall, cpu = pct(s.wall_ms, 50) / s.units, s.cpu_ms / s.units
        print(f"  {s.label:<22} {wall:12.3f} {cpu:12.3f} {s.events / s.units:12.2f} {wall / b_wall:10.2f} {cpu / b_cpu:10.2f}")


# -- 2. listing -------------------------------------------------------------------------------------------

_SEED_RUNS = """
INSERT INTO runs (id, tenant_id, workflow_id, status, inputs, outputs, steps, created_by, created_at, started_at,
                  finished_at, stream_version, run_number, exclusive)
SELECT gen_random_uuid(), $1, $2, CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END, '{}'::jsonb,
       '{"s2": null}'::jsonb, '{"s0": {"status": "completed"}, "s1": {"status": "completed"}}'::jsonb, 'bench',
       now() - (($3 - i) * interval '1 second'), now() - (($3 - i) * interval '1 second'),
       now() - (($3 - i) * interval '1 second') + interval '5 milliseconds', 9, i, false
FROM generate_series(1, $3) AS i
"""


async def timed_pair(http: HttpConn, paths: dict[int, str], n: int = 30) -> dict[int, float]:
    """Median ms of GET on each path, the paths' requests alternating so both see the same machine load."""
    for path in paths.values():
        for _ in range(3):
            status, body = await http.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET {path}: HTTP {status} {body[:200]!r}")
    times: dict[int, list[float]] = {k: [] for k in paths}
    for i in range(n):
        for key, path in (list(paths.items()) if i % 2 == 0 else list(paths.items())[::-1]):
            t0 = time.perf_counter()
            await http.request("GET", path)
            times[key].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


async def measure_listing(http, completions, admin, big: int) -> None:
    small = 100
    ids = {}
    for n in (small, big):
        ids[n] = await create_workflow(http, f"growth listing {n}", chain(3))
        t0 = time.perf_counter()
        await admin.execute(_SEED_RUNS, TENANT, ids[n], n)
        print(f"  seeded {n:>7} runs rows in {time.perf_counter() - t0:5.1f} s (direct INSERT ... generate_series)")
    await admin.execute("VACUUM ANALYZE runs")  # the state autovacuum leaves a table in after a bulk insert
    print(f"\n== listing runs of a workflow: {big} runs vs {small} (median of 30, ms; ratio = {big} / {small})")
    print(f"  {'endpoint':<58} {small:>8} {big:>8} {'ratio':>7}")
    shapes = (
        ("v2 GET .../runs?limit=50 (first page)", lambda n: f"/api/v2/workflows/{ids[n]}/runs?limit=50"),
        ("v2 GET .../runs?limit=50&offset=<last page>", lambda n: f"/api/v2/workflows/{ids[n]}/runs?limit=50&offset={n - 50}"),
        ("v2 GET .../runs?status=failed&limit=50", lambda n: f"/api/v2/workflows/{ids[n]}/runs?status=failed&limit=50"),
        ("console GET /api/workflows/:id (200 newest runs)", lambda n: f"/api/workflows/{ids[n]}"),
    )
    for label, path in shapes:
        ms = await timed_pair(http, {n: path(n) for n in (small, big)})
        print(f"  {label:<58} {ms[small]:8.2f} {ms[big]:8.2f} {ms[big] / ms[small]:7.2f}", flush=True)
    walls: dict[int, list[float]] = {small: [], big: []}
    for n in (small, big):
        await run_once(http, completions, ids[n], {})
    for i in range(30):
        for n in ((small, big) if i % 2 == 0 else (big, small)):
            walls[n].append((await run_once(http, completions, ids[n], {}))[1])
    walls = {n: statistics.median(v) for n, v in walls.items()}
    print(f"  {'a 3-step run of the workflow, submit -> completed':<58} {walls[small]:8.2f} {walls[big]:8.2f} "
          f"{walls[big] / walls[small]:7.2f}")


# -- main ---------------------------------------------------------------------------------------------------


async def bench_platform(args, ports, dsn, procs, pg, nats_srv) -> None:
    token = issue_token(load_settings({}), TENANT, "bench")
    admin = await asyncpg.connect(dsn)
    nc = await nats.connect(nats_srv.url)
    completions = await Completions.subscribed(nc, TENANT)
    http = HttpConn(ports["gateway"], token)
    try:
        await wait_relay_caught_up(admin)
        if "runs" not in args.skip:
            meter = CpuMeter({n: procs[n].proc.pid for n in SERVICES}, pg.proc.pid, nats_srv.proc.pid)
            steps = [int(x) for x in args.steps.split(",") if x]
            shapes = [Shape(f"chain of {n} steps", n, "step", chain(n), {}, max(3, min(30, 300 // n))) for n in steps]
            shapes += [Shape(f"for_each of {r} rows", r, "row", FOR_EACH,
                             {"rows": [{"n": i, "name": f"row {i}"} for i in range(r)]}, 5)
                       for r in (int(x) for x in args.rows.split(",") if x)]
            print("\n== runs, one at a time (per run: p50 wall, CPU of all platform processes, events; CPU ms per process)")
            for shape in shapes:
                await measure_shape(http, completions, admin, meter, shape)
            print_runs(shapes)
        if "listing" not in args.skip:
            await measure_listing(http, completions, admin, args.listing_runs)
    finally:
        await http.close()
        await nc.close()
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="3,30,300", help="chain lengths; the first is the baseline (default 3,30,300)")
    parser.add_argument("--rows", default="100,1000", help="for_each row counts (default 100,1000)")
    parser.add_argument("--listing-runs", type=int, default=100_000, help="runs of the big workflow (default 100000)")
    parser.add_argument("--store-events", type=int, default=1_000_000, help="events seeded in the store (default 1000000)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: runs, listing, store")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="weft-bench-growth-"))
    pg = EmbeddedPostgres(root / "pg", free_port(), root / "postgres.log")
    nats_srv = EmbeddedNats(root / "nats", free_port())
    procs: dict = {}
    ok = False
    print(f"python {sys.version.split()[0]}, {psutil.cpu_count()} CPUs; machine busy before starting: "
          f"{psutil.cpu_percent(interval=1.0):.0f}%")
    try:
        pg.start()
        pg.create_database("weft_bench")
        dsn = pg.dsn("weft_bench")
        asyncio.run(migrate(dsn))
        if not {"runs", "listing"} <= set(args.skip.split(",")):
            nats_srv.start()
            procs, ports = start_services(root, list(SERVICES), dsn, nats_srv.url, {
                "WEFT_LOG_LEVEL": "warning", "WEFT_MAIL_SINK_DIR": str(root / "mail"),
                "WEFT_V2_RATE_LIMIT_PER_MINUTE": "10000000"})
            asyncio.run(bench_platform(args, ports, dsn, procs, pg, nats_srv))
        if "store" not in args.skip:
            for name in ("weft_store_empty", "weft_store_full"):
                pg.create_database(name)
                asyncio.run(migrate(pg.dsn(name)))
            asyncio.run(measure_store(pg.dsn("weft_store_empty"), pg.dsn("weft_store_full"), args.store_events))
        ok = True
    finally:
        stop_all(root, procs, nats_srv if nats_srv.proc else None, pg, ok)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
