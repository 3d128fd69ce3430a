"""The scheduler at scale: idle CPU with 10,000 enabled schedules, and how soon a due occurrence starts its run,
each printed next to a baseline measured in the same run.

    .venv/bin/python bench/bench_scheduler.py [--schedules 10000] [--idle-s 20] [--probes 20] [--rounds 2]

Postgres and nats-server from the wheels (temporary directory), migrated; relay, executor and one scheduler
process. Then:
1. Idle CPU of the scheduler process (utime + stime from /proc) over --idle-s seconds, first with no
   schedules (baseline), then with --schedules enabled schedules (daily, random minute and hour, twelve time
   zones, none due during the bench). Also shown: what a loop that scans every schedule once a second (the
   design the scheduler avoids) spends over the same window, measured in this process.
   Goal: the scheduler sleeps until the next due time, so 10,000 schedules cost about what none do.
2. Due-to-run-start latency: --probes schedules due at the next minute boundary, for --rounds rounds, while the
   --schedules others stay loaded. Per occurrence: RunCreated and RunStarted recorded_at minus the
   occurrence time. Baseline: --probes StartRun commands sent at once straight to the executor, from
   issue to RunCreated / RunStarted.   Goal: p99 due-to-RunStarted < 1 s.
Everything started here is stopped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import pct, start_services, stop_all, verdict  # noqa: E402
from libs.domain import cron  # noqa: E402
from libs.events.bus import CommandBus  # noqa: E402
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402
from libs.events.migrate import migrate  # noqa: E402
from libs.readmodels import project  # noqa: E402
from libs.events.schemas import CommandEnvelope, Metadata  # noqa: E402
from libs.events.schemas.run import StartRun  # noqa: E402
from libs.events.schemas.schedule import ScheduleCreated  # noqa: E402
from libs.events.schemas.workflow import WorkflowCreated  # noqa: E402
from libs.events.order import cursor_at, read_snapshot  # noqa: E402
from libs.events.store import EventStore  # noqa: E402
from services.scheduler.domain import run_id_for  # noqa: E402

TENANT = "tbench"
ZONES = ["UTC", "America/New_York", "America/Los_Angeles", "America/Sao_Paulo", "Europe/London", "Europe/Berlin",
         "Africa/Lagos", "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney", "Pacific/Auckland", "Asia/Kathmandu"]
DEFINITION = {"nodes": [{"id": "s", "type": "echo", "config": {"message": "tick"}}], "concurrency": "unlimited"}
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def idle_cpu(pid: int, seconds: float) -> float:
    """The share of one core a process used over `seconds` of wall time."""
    before, started = cpu_s(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_s(pid) - before) / (time.monotonic() - started)


async def scan_every_second(pool: asyncpg.Pool, seconds: float) -> tuple[float, int]:
    """The design the scheduler avoids: once a second read every enabled schedule and work out whether it is
    due. Returns (share of a core this process spent on it, schedules per scan)."""
    spent, rows, started = 0.0, [], time.monotonic()
    while time.monotonic() - started < seconds:
        t0 = time.process_time()
        rows = await pool.fetch("SELECT cron_expression, timezone, cursor_at FROM schedules WHERE enabled")
        now = datetime.now(UTC)
        for r in rows:
            nxt = cron.next_after(cron.parse(r["cron_expression"]), cron.zone(r["timezone"]), r["cursor_at"])
            _ = nxt is not None and nxt <= now
        spent += time.process_time() - t0
        await asyncio.sleep(max(0.0, 1.0 - (time.process_time() - t0)))
    return spent / (time.monotonic() - started), len(rows)


async def workflow(store: EventStore) -> uuid.UUID:
    wid = uuid.uuid4()
    await store.append(f"workflow-{wid}", 0, [WorkflowCreated(
        workflow_id=wid, name=f"bench-{wid.hex[:8]}", definition=DEFINITION, created_by="bench",
        at=datetime.now(UTC))], metadata=Metadata(tenant_id=TENANT))
    return wid


async def bulk_schedules(pool: asyncpg.Pool, wid: uuid.UUID, specs: list[tuple[str, str]], at: datetime) -> None:
    """Load many schedules fast: their ScheduleCreated events in one INSERT, projected in the same transaction
    (as `weft projections rebuild` does). Setup only; the probes below go through EventStore.append."""
    events = [ScheduleCreated(schedule_id=uuid.uuid4(), workflow_id=wid, cron_expression=e, timezone=z,
                              created_by="bench", at=at) for e, z in specs]
    meta = msgspec.json.encode(Metadata(tenant_id=TENANT, actor="bench")).decode()
    async with pool.acquire() as conn, conn.transaction():
        start = await conn.fetchval("SELECT coalesce(max(global_position), 0) FROM events")
        await conn.execute(
            "INSERT INTO events (event_id, stream_id, version, type, data, metadata, tenant_id)"
            " SELECT gen_random_uuid(), s, 1, 'ScheduleCreated', d::jsonb, $3::jsonb, $4"
            " FROM unnest($1::text[], $2::text[]) AS t(s, d)",
            [f"schedule-{e.schedule_id}" for e in events], [msgspec.json.encode(e).decode() for e in events],
            meta, TENANT)
        cursor = await cursor_at(conn, start)  # our own rows, not committed yet: no xmin bound (read_snapshot)
        while chunk := await read_snapshot(conn, cursor, 1000):
            await project(conn, chunk)
            cursor = chunk[-1].cursor


def quiet_cron(rng: random.Random, avoid_until: datetime) -> tuple[str, str]:
    """A daily cron in a random zone whose next occurrence is after `avoid_until` (not due during the bench)."""
    while True:
        expression, zone = f"{rng.randrange(60)} {rng.randrange(24)} * * *", rng.choice(ZONES)
        nxt = cron.next_after(cron.parse(expression), cron.zone(zone), datetime.now(UTC))
        if nxt > avoid_until:
            return expression, zone


async def create_schedules(store: EventStore, wid: uuid.UUID, specs: list[tuple[str, str]], at: datetime,
                           concurrency: int = 16, **settings) -> list[uuid.UUID]:
    sids = [uuid.uuid4() for _ in specs]
    limit = asyncio.Semaphore(concurrency)

    async def one(sid: uuid.UUID, expression: str, zone: str) -> None:
        async with limit:
            await store.append(f"schedule-{sid}", 0, [ScheduleCreated(
                schedule_id=sid, workflow_id=wid, cron_expression=expression, timezone=zone, created_by="bench",
                at=at, **settings)], metadata=Metadata(tenant_id=TENANT))

    await asyncio.gather(*(one(sid, e, z) for sid, (e, z) in zip(sids, specs, strict=True)))
    return sids


async def run_times(pool: asyncpg.Pool, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, datetime]]:
    rows = await pool.fetch(
        "SELECT stream_id, type, recorded_at FROM events WHERE stream_id = ANY($1::text[])"
        " AND type IN ('RunCreated', 'RunStarted')", [f"run-{r}" for r in run_ids])
    times: dict[uuid.UUID, dict[str, datetime]] = {}
    for r in rows:
        times.setdefault(uuid.UUID(r["stream_id"][4:]), {})[r["type"]] = r["recorded_at"]
    return times


async def wait_runs(pool: asyncpg.Pool, run_ids: list[uuid.UUID], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        times = await run_times(pool, run_ids)
        if len(times) == len(run_ids) and all(len(t) == 2 for t in times.values()):
            return times
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(times)} of {len(run_ids)} runs started within {timeout} s")
        await asyncio.sleep(0.2)


def row(label: str, values_ms: list[float]) -> str:
    return (f"  {label:<48} min {min(values_ms):7.1f}   p50 {pct(values_ms, 50):7.1f}   p99 {pct(values_ms, 99):7.1f}"
            f"   max {max(values_ms):7.1f} ms   n={len(values_ms)}")


async def direct_starts(nats_url: str, pool: asyncpg.Pool, wid: uuid.UUID, n: int) -> tuple[list[float], list[float]]:
    """The baseline: n StartRun commands published at once to the executor, issue -> RunCreated / RunStarted."""
    nc = await nats.connect(nats_url)
    try:
        bus = CommandBus(nc, nc.jetstream(), 10.0)
        issued = datetime.now(UTC)
        run_ids = [uuid.uuid4() for _ in range(n)]
        await asyncio.gather(*(bus.send("executor", CommandEnvelope(
            command_id=uuid.uuid4(), tenant_id=TENANT, actor="bench", correlation_id="bench", issued_at=issued,
            command=StartRun(run_id=rid, workflow_id=wid, workflow_version=1, definition=DEFINITION, inputs={},
                             created_by="bench", at=issued))) for rid in run_ids))
    finally:
        await nc.drain()
    times = await wait_runs(pool, run_ids)
    return ([(t["RunCreated"] - issued).total_seconds() * 1000 for t in times.values()],
            [(t["RunStarted"] - issued).total_seconds() * 1000 for t in times.values()])


async def bench(args: argparse.Namespace, database_url: str, nats_url: str, scheduler_pid: int) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=20)
    store = EventStore(pool, projector=project)
    try:
        await asyncio.sleep(2.0)  # let start-up settle
        idle_empty = await idle_cpu(scheduler_pid, args.idle_s)
        wid = await workflow(store)
        rng = random.Random(7)
        quiet_until = datetime.now(UTC) + timedelta(minutes=45)
        specs = [quiet_cron(rng, quiet_until) for _ in range(args.schedules)]
        t0 = time.perf_counter()
        await bulk_schedules(pool, wid, specs, datetime.now(UTC))
        created_s = time.perf_counter() - t0
        enabled = await pool.fetchval("SELECT count(*) FROM schedules WHERE next_run_at IS NOT NULL")
        await asyncio.sleep(2.0)  # the creations' NOTIFY wake-ups are over
        idle_loaded = await idle_cpu(scheduler_pid, args.idle_s)
        scan_share, scanned = await scan_every_second(pool, args.idle_s)

        print(f"1. Idle CPU of the scheduler process ({args.idle_s:.0f} s windows; {enabled} enabled schedules"
              f" loaded in {created_s:.1f} s, the first due after {quiet_until:%H:%M} UTC)")
        print(f"  no schedules (baseline)                         {idle_empty * 100:7.3f} % of a core")
        print(f"  {enabled} enabled schedules                         {idle_loaded * 100:7.3f} % of a core   "
              f"(+{(idle_loaded - idle_empty) * 100:.3f} points)")
        print(f"  a scan-every-second loop over {scanned} schedules   {scan_share * 100:7.3f} % of a core "
              f"(this process only; Postgres not counted)")
        print(f"  goal: sleeping until the next due time keeps idle CPU near the baseline -> "
              f"{verdict(idle_loaded - idle_empty < 0.01)} (< 1 point above it)")
        print()

        base_created, base_started = await direct_starts(nats_url, pool, wid, args.probes)
        due_created: list[float] = []
        due_started: list[float] = []
        decided: list[float] = []
        published: list[float] = []
        for _ in range(args.rounds):
            now = datetime.now(UTC)
            boundary = cron.next_after(cron.parse("* * * * *"), cron.zone("UTC"), now + timedelta(seconds=3))
            # Daily at that minute: each probe fires once during the bench.
            probe = (f"{boundary.minute} {boundary.hour} * * *", "UTC")
            sids = await create_schedules(store, wid, [probe] * args.probes, now, overlap_policy="allow")
            await asyncio.sleep(max(0.0, (boundary - datetime.now(UTC)).total_seconds()))
            times = await wait_runs(pool, [run_id_for(sid, boundary) for sid in sids])
            due_created += [(t["RunCreated"] - boundary).total_seconds() * 1000 for t in times.values()]
            due_started += [(t["RunStarted"] - boundary).total_seconds() * 1000 for t in times.values()]
            # Where the time goes: the decision (OccurrenceFired committed), the StartRun published.
            decided += [(r["recorded_at"] - boundary).total_seconds() * 1000 for r in await pool.fetch(
                "SELECT recorded_at FROM events WHERE type = 'OccurrenceFired' AND stream_id = ANY($1::text[])",
                [f"schedule-{sid}" for sid in sids])]
            published += [(r["fired_at"] - boundary).total_seconds() * 1000 for r in await pool.fetch(
                "SELECT fired_at FROM timers WHERE envelope->'command'->>'run_id' = ANY($1::text[])",
                [str(run_id_for(sid, boundary)) for sid in sids])]

        print(f"2. Due occurrence -> run ({args.probes} probes due together at each of {args.rounds} minute "
              f"boundaries, {enabled} other schedules loaded)")
        print(row("baseline: StartRun sent -> RunCreated", base_created))
        print(row("baseline: StartRun sent -> RunStarted", base_started))
        print(row("scheduled: occurrence time -> fired (committed)", decided))
        print(row("scheduled: occurrence time -> StartRun published", published))
        print(row("scheduled: occurrence time -> RunCreated", due_created))
        print(row("scheduled: occurrence time -> RunStarted", due_started))
        print(f"  ratio scheduled / baseline (RunStarted)        p50 {pct(due_started, 50) / pct(base_started, 50):8.2f} x"
              f"   p99 {pct(due_started, 99) / pct(base_started, 99):8.2f} x")
        print(f"  goal: a due occurrence starts its run within 1 s -> p99 {pct(due_started, 99):.1f} ms: "
              f"{verdict(pct(due_started, 99) < 1000)}")
    finally:
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=10_000, help="enabled schedules loaded")
    parser.add_argument("--idle-s", type=float, default=20.0, help="length of each idle CPU window")
    parser.add_argument("--probes", type=int, default=20, help="every-minute schedules due together per round")
    parser.add_argument("--rounds", type=int, default=2, help="minute boundaries to measure")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="weft-bench-scheduler-"))
    pg = EmbeddedPostgres(root / "pg", free_port(), root / "postgres.log")
    nats_server = EmbeddedNats(root / "nats", free_port())
    procs: dict = {}
    ok = False
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
        pg.start()
        pg.create_database("weft_bench")
        nats_server.start()
        database_url = pg.dsn("weft_bench")
        asyncio.run(migrate(database_url))
        procs, _ = start_services(root, ["relay", "executor", "scheduler"], database_url, nats_server.url,
                                  {"WEFT_LOG_LEVEL": "warning"})
        asyncio.run(bench(args, database_url, nats_server.url, procs["scheduler"].proc.pid))
        ok = True
    finally:
        stop_all(root, procs, nats_server, pg, ok)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
