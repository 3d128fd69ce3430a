"""End-to-end run throughput: a 3-step no-op workflow through the HTTP API, next to the event-store ceiling.

    .venv/bin/python bench/bench_runs.py [--runs 400] [--cap-s 45] [--levels 8,32,128] [--profile-level 128]

Everything runs in this one process tree, on whatever cores the machine has (the goal is stated for 2):

1. Postgres (fsync on) and nats-server (JetStream, sync_interval from WEFT_NATS_SYNC_INTERVAL) from the
   wheels, in a temporary directory, migrated. Before any service starts, the raw append ceiling on the same events table:
     store  single-event EventStore.append calls (tenant transaction, no lock: docs/decisions/0032, no projector)
     raw    single-row autocommit asyncpg INSERTs of equivalent rows, as the superuser
   each with 1 and with 8 concurrent writers (streams "ceil-<uuid>", which no service subscribes to).
2. gateway, planner (creates the workflow), executor and relay as processes. One workflow
   a -> b -> c of `noop` steps with "concurrency": "unlimited". The bench process keeps N runs in flight
   (N = 8, 32, 128): each of N workers POSTs /api/v2/workflows/{id}/execute on its own keep-alive
   connection (a minimal HTTP/1.1 client, so the load generator stays cheap), then waits for that run's
   RunCompleted, seen on core NATS (`weft.evt.<tenant>.run.*.RunCompleted`, published by the relay),
   before it submits the next. Per level: --runs runs or --cap-s seconds of submitting, whichever comes
   first (runs still in flight then are waited for). A first level of --idle-runs runs at 1 in flight
   gives the unloaded latency.
   Reported: runs/s (completed / time from the level's first submit to its last completion), p50/p99
   submit->completed, p50/p99 submit latency (the HTTP response), and per process the CPU time spent
   during the level (psutil; Postgres = postmaster + all backends), plus write transactions (xids), WAL
   bytes and NATS messages per run, and the median gap between consecutive events of a run
   (recorded_at in the events table: where the latency goes).
3. Where the CPU goes: one more level (--profile-level in flight) with py-spy (if installed) sampling
   the gateway, executor and relay for --profile-s seconds (--nonblocking); top frames are summarised
   and the raw profiles are kept in a directory printed at the end. Then --statement-runs runs at 1 in
   flight with log_statement=all: every statement Postgres receives per run, counted by text.
4. First of all, unless --no-peer: the peer, DBOS Transact running the same workflow on its own Postgres
   (bench/bench_dbos.py, the optional `bench` extra), then Weft/DBOS ratios after the summary.
Everything started here is stopped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import nats
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    measure_appends, pct, print_append_aims, raw_writer, start_services, stop_all, store_writer, verdict)
from libs.security.auth import issue_token  # noqa: E402
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402
from libs.events.db import create_pool  # noqa: E402
from libs.events.migrate import migrate  # noqa: E402
from services.relay.app import CHECKPOINT  # noqa: E402
from libs.events.settings import load_settings  # noqa: E402
from libs.events.store import EventStore  # noqa: E402

TENANT = "tbench"
CEIL_TENANT = "tceil"
SERVICES = ("gateway", "planner", "executor", "relay")
PROFILED = ("gateway", "executor", "relay")
DEFINITION = {
    "nodes": [
        {"id": "a", "type": "noop"},
        {"id": "b", "type": "noop", "input_from": "a"},
        {"id": "c", "type": "noop", "input_from": "b"},
    ],
    "concurrency": "unlimited",
}
GOAL_RUNS_S, GOAL_P50_MS = 300.0, 10.0
COMPLETION_TIMEOUT_S = 60.0
ENTITY_NS_NAME = "entity"  # services.gateway.commands.entity_id: uuid5(command_id, "entity")


# -- 1. the raw ceiling ------------------------------------------------------------------------------------


async def measure_ceiling(dsn: str, n: int) -> dict[str, float]:
    # The services' pool (libs/events/db.create_pool): releasing a connection runs no reset query.
    pool = await create_pool(load_settings({}, database_url=dsn), min_size=9, max_size=9)
    try:
        store = EventStore(pool, app_role="weft_app", projector=None)
        await store_writer(store, 50, tenant=CEIL_TENANT, prefix="ceil", stream_length=10)  # warm connections, prepared statements, the table
        await raw_writer(pool, 50, tenant=CEIL_TENANT, prefix="ceil", stream_length=10)
        rates = await measure_appends(store, pool, n, 8, tenant=CEIL_TENANT, prefix="ceil", stream_length=10)
        rates["store8"], rates["raw8"] = rates["storeN"], rates["rawN"]
        print_append_aims(rates, 8)

        # What one database round trip costs here, and the per-transaction overheads every service pays.
        stream = await pool.fetchval(
            "SELECT stream_id FROM events WHERE tenant_id = $1 AND version = 9 LIMIT 1", CEIL_TENANT)
        m = 500

        async def timed(label: str, one) -> None:
            started = time.perf_counter()
            for _ in range(m):
                await one()
            us = (time.perf_counter() - started) / m * 1e6
            print(f"  {label:<66} {us:8.0f} us", flush=True)

        print(f"one caller, sequential, mean of {m} (read-only, no commit to wait for):")
        async with pool.acquire() as held:
            await timed("SELECT 1 on a held connection (one round trip)", lambda: held.fetchval("SELECT 1"))

        async def acquire_select() -> None:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")

        async def tenant_select() -> None:
            async with store.tenant_transaction(CEIL_TENANT) as conn:
                await conn.fetchval("SELECT 1")

        await timed("pool.acquire + SELECT 1 + release (no reset query)", acquire_select)
        await timed("tenant_transaction + SELECT 1 (BEGIN/set_config, SELECT, COMMIT)", tenant_select)
        await timed("EventStore.read_stream of a 10-event stream", lambda: store.read_stream(CEIL_TENANT, stream))
    finally:
        await pool.close()
    return rates


async def measure_jetstream(nats_url: str, nats_pid: int, count: int, depths: tuple[int, ...] = (9, 144)) -> dict[str, float]:
    """The relay's publishing alone on this nats-server (its sync_interval): messages shaped like events (headers with
    Nats-Msg-Id, a few hundred bytes) into a stream of their own, pipelined `depth` at a time with every PubAck
    awaited: 9 is one run's events, 144 sixteen runs' (the relay publishes a whole chunk at once under load, and
    nats-server then syncs several messages per fsync). Gives stored messages/s and nats-server CPU per message."""
    rates: dict[str, float] = {}
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="CEIL", subjects=["ceil.>"], duplicate_window=120.0)
        server = psutil.Process(nats_pid)
        payload = json.dumps({"run_id": str(uuid.uuid4()), "step_id": "a", "attempt": 1, "output": {},
                              "at": "2026-11-23T00:00:00+00:00"}).encode()

        async def publish(count: int, depth: int) -> int:
            for i in range(0, count, depth):
                acks = [await js.publish_async(f"ceil.t.run.{i}.E{j}", payload, headers={
                    "Nats-Msg-Id": str(uuid.uuid4()), "Weft-Position": str(i + j), "Weft-Type": "StepCompleted"})
                    for j in range(depth)]
                await asyncio.gather(*acks)
            return -(-count // depth) * depth

        for depth in depths:
            await publish(depth * 4, depth)  # warm up
            before, started = server.cpu_times(), time.perf_counter()
            n = await publish(count, depth)
            elapsed, after = time.perf_counter() - started, server.cpu_times()
            cpu = (after.user + after.system) - (before.user + before.system)
            rates[f"js_rate_{depth}"], rates[f"js_cpu_us_{depth}"] = n / elapsed, cpu / n * 1e6
            print(f"  JetStream publish, {depth:>3} pipelined, PubAcks awaited  {n:>6} in {elapsed:5.2f} s "
                  f"{n / elapsed:8.0f} /s   nats-server CPU {cpu / n * 1e6:4.0f} us per stored message "
                  f"({100 * (after.system - before.system) / max(cpu, 1e-9):.0f}% of it in the kernel)", flush=True)
        await js.delete_stream("CEIL")
    finally:
        await nc.close()
    rates["js_cpu_us"] = min(v for k, v in rates.items() if k.startswith("js_cpu_us_"))
    return rates


# -- a minimal keep-alive HTTP/1.1 client (cheap on the shared cores) -----------------------------------


class HttpConn:
    # uvicorn closes a keep-alive connection after 5 s idle (timeout_keep_alive); a worker can wait longer
    # than that for its run, so a connection idle for longer is replaced before the next request.
    MAX_IDLE_S = 4.0

    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.last_used = time.monotonic()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is not None and time.monotonic() - self.last_used > self.MAX_IDLE_S:
            await self.close()
        if self.writer is None:
            await self.connect()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            data = b"".join(parts)
        else:
            data = await self.reader.read()
        self.last_used = time.monotonic()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, data


# -- completions seen on NATS ------------------------------------------------------------------------------


class Completions:
    def __init__(self) -> None:
        self.done: dict[str, tuple[float, str]] = {}  # run id -> (perf_counter when seen, event type)
        self.waiters: dict[str, asyncio.Future] = {}

    async def on_msg(self, msg) -> None:
        parts = msg.subject.split(".")  # weft.evt.<tenant>.run.<run id>.<Type>
        rid, kind = parts[4], parts[5]
        if rid in self.done:
            return  # a republished duplicate
        self.done[rid] = (time.perf_counter(), kind)
        waiter = self.waiters.pop(rid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, rid: str, timeout: float) -> tuple[float, str] | None:
        if rid not in self.done:
            fut = asyncio.get_running_loop().create_future()
            self.waiters[rid] = fut
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                self.waiters.pop(rid, None)
                return None
        return self.done[rid]

    @classmethod
    async def subscribed(cls, nc, tenant: str) -> Completions:
        """Completions of every run of `tenant`, as the relay publishes their last event."""
        completions = cls()
        for kind in ("RunCompleted", "RunFailed", "RunCancelled", "RunTerminated"):
            await nc.subscribe(f"weft.evt.{tenant}.run.*.{kind}", cb=completions.on_msg)
        return completions


@dataclass
class RunRecord:
    rid: str
    t_submit: float  # perf_counter
    wall_submit: float  # time.time(), to compare with recorded_at
    t_response: float
    status: int
    t_done: float | None = None
    kind: str = ""


@dataclass
class LevelResult:
    inflight: int
    records: list[RunRecord] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    started: float = 0.0
    ended: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    system: dict[str, float] = field(default_factory=dict)
    db: dict[str, float] = field(default_factory=dict)
    nats: dict[str, float] = field(default_factory=dict)
    gaps: list[tuple[str, list[float]]] = field(default_factory=list)

    @property
    def completed(self) -> list[RunRecord]:
        return [r for r in self.records if r.t_done is not None and r.kind == "RunCompleted"]

    @property
    def wall(self) -> float:
        return self.ended - self.started

    @property
    def runs_per_s(self) -> float:
        done = self.completed
        if not done:
            return 0.0
        return len(done) / (max(r.t_done for r in done) - self.started)


# -- per-process CPU ---------------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds (user + system) per component; Postgres counts the postmaster, live backends and reaped ones."""

    def __init__(self, pids: dict[str, int], pg_pid: int, nats_pid: int):
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.procs["nats-server"] = psutil.Process(nats_pid)
        self.procs["bench client (this process)"] = psutil.Process()
        self.pg = psutil.Process(pg_pid)

    def _pg(self) -> dict[int, float]:
        t = self.pg.cpu_times()
        out = {0: t.user + t.system + t.children_user + t.children_system}  # 0: postmaster + reaped backends
        for child in self.pg.children(recursive=True):
            try:
                c = child.cpu_times()
                out[child.pid] = c.user + c.system
            except psutil.Error:
                pass
        return out

    def snapshot(self) -> dict:
        snap = {}
        for name, proc in self.procs.items():
            t = proc.cpu_times()
            snap[name] = t.user + t.system
        snap["_pg"] = self._pg()
        snap["_sys"] = psutil.cpu_times()
        return snap

    @staticmethod
    def delta(before: dict, after: dict) -> tuple[dict[str, float], dict[str, float]]:
        cpu = {name: after[name] - before[name] for name in after if not name.startswith("_")}
        pg_before, pg_after = before["_pg"], after["_pg"]
        cpu["postgres"] = sum(v - pg_before.get(pid, 0.0) for pid, v in pg_after.items())
        s0, s1 = before["_sys"], after["_sys"]
        sysd = {k: getattr(s1, k) - getattr(s0, k) for k in s1._fields}
        return cpu, sysd


def nats_varz(monitor_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=2) as resp:  # noqa: S310
        varz = json.load(resp)
    return {"in_msgs": varz["in_msgs"], "out_msgs": varz["out_msgs"], "cpu": varz.get("cpu", 0.0)}


async def db_counters(admin: asyncpg.Connection) -> dict[str, float]:
    row = await admin.fetchrow(
        "SELECT pg_current_xact_id()::text::bigint AS xid,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal,"
        " (SELECT count(*) FROM events) AS events"
    )
    stats = await admin.fetchrow(
        "SELECT xact_commit + xact_rollback AS xacts FROM pg_stat_database WHERE datname = current_database()")
    return {"xid": row["xid"], "wal": row["wal"], "events": row["events"], "xacts": stats["xacts"]}


# -- the load ----------------------------------------------------------------------------------------------


async def run_level(
    port: int, token: str, workflow_id: str, completions: Completions, inflight: int, total: int, cap_s: float
) -> LevelResult:
    conns = [HttpConn(port, token) for _ in range(inflight)]
    await asyncio.gather(*(c.connect() for c in conns))
    result = LevelResult(inflight=inflight)
    path = f"/api/v2/workflows/{workflow_id}/execute"
    submitted = 0
    result.started = time.perf_counter()
    deadline = result.started + cap_s

    async def worker(conn: HttpConn) -> None:
        nonlocal submitted
        while submitted < total and time.perf_counter() < deadline:
            submitted += 1
            t0, w0 = time.perf_counter(), time.time()
            try:
                status, body = await conn.request("POST", path, b"{}")
            except (OSError, asyncio.IncompleteReadError) as exc:
                result.errors[f"{type(exc).__name__}"] += 1
                await conn.close()
                continue
            t1 = time.perf_counter()
            try:
                payload = json.loads(body) if body else {}
            except ValueError:
                payload = {"body": body[:120].decode(errors="replace")}
            if status == 201:
                rid = payload["run"]["id"]
            elif status == 202:  # not committed within the gateway's wait; the run id follows from the command id
                rid = str(uuid.uuid5(uuid.UUID(payload["command_id"]), ENTITY_NS_NAME))
            else:
                result.errors[f"HTTP {status}: {str(payload)[:120]}"] += 1
                continue
            rec = RunRecord(rid=rid, t_submit=t0, wall_submit=w0, t_response=t1, status=status)
            result.records.append(rec)
            seen = await completions.wait(rid, COMPLETION_TIMEOUT_S)
            if seen is None:
                result.errors["no completion within 60 s"] += 1
            else:
                rec.t_done, rec.kind = seen

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        result.ended = time.perf_counter()
        await asyncio.gather(*(c.close() for c in conns))
    return result


async def event_gaps(admin: asyncpg.Connection, records: list[RunRecord], done_wall: dict[str, float]):
    """Median/p99 gaps between consecutive events of the level's runs, from recorded_at (clock_timestamp())."""
    by_rid = {r.rid: r for r in records}
    rows = await admin.fetch(
        "SELECT stream_id, version, type, data->>'step_id' AS step, extract(epoch FROM recorded_at)::float8 AS at"
        " FROM events WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, version",
        [f"run-{rid}" for rid in by_rid],
    )
    streams: dict[str, list] = defaultdict(list)
    for row in rows:
        streams[row["stream_id"].split("-", 1)[1]].append(row)
    gaps: dict[str, list[float]] = defaultdict(list)
    order: list[str] = []
    for rid, evs in streams.items():
        rec = by_rid[rid]
        prev_label, prev_at = "submit (client)", rec.wall_submit
        for row in evs:
            label = row["type"] + (f" {row['step']}" if row["step"] else "")
            key = f"{prev_label} -> {label}"
            if key not in gaps:
                order.append(key)
            gaps[key].append((row["at"] - prev_at) * 1000)
            prev_label, prev_at = label, row["at"]
        if rid in done_wall:
            key = f"{prev_label} -> seen on NATS (client)"
            if key not in gaps:
                order.append(key)
            gaps[key].append((done_wall[rid] - prev_at) * 1000)
    return [(k, gaps[k]) for k in order], {rid: len(evs) for rid, evs in streams.items()}


def print_level(res: LevelResult, cores: int) -> None:
    done = res.completed
    e2e = [(r.t_done - r.t_submit) * 1000 for r in done]
    submit = [(r.t_response - r.t_submit) * 1000 for r in res.records]
    statuses = Counter(r.status for r in res.records)
    kinds = Counter(r.kind or "pending" for r in res.records)
    print(f"\n== {res.inflight} in flight: {len(res.records)} runs submitted, {len(done)} completed in {res.wall:.2f} s"
          f"  (HTTP {dict(statuses)}, outcomes {dict(kinds)})")
    if res.errors:
        print(f"   errors: {dict(res.errors)}")
    print(f"   throughput                      {res.runs_per_s:8.1f} runs/s")
    print(f"   submit -> completed             p50 {pct(e2e, 50):8.2f} ms   p99 {pct(e2e, 99):8.2f} ms   "
          f"max {max(e2e, default=float('nan')):8.2f} ms")
    print(f"   submit latency (HTTP response)  p50 {pct(submit, 50):8.2f} ms   p99 {pct(submit, 99):8.2f} ms")
    n = max(len(done), 1)
    wall = res.wall
    print(f"   per run: ~{res.db['xacts'] / n:.0f} Postgres transactions (pg_stat_database, +-a few %), "
          f"{res.db['xid'] / n:.1f} of them writing (xids), {res.db['wal'] / n / 1024:.1f} KiB WAL, "
          f"{res.db['events'] / n:.1f} events, NATS {res.nats['in_msgs'] / n:.1f} msgs in / "
          f"{res.nats['out_msgs'] / n:.1f} out")
    busy = sum(v for k, v in res.system.items() if k not in ("idle", "iowait", "steal", "guest", "guest_nice"))
    total = sum(v for k, v in res.system.items() if k not in ("guest", "guest_nice"))
    print(f"   CPU during the level ({wall:.2f} s wall, {cores} cores = {cores * wall:.2f} CPU-s): machine busy "
          f"{busy / total * 100:.0f}% (iowait {res.system.get('iowait', 0) / total * 100:.0f}%)")
    for name, secs in sorted(res.cpu.items(), key=lambda kv: -kv[1]):
        print(f"     {name:<30} {secs:7.2f} CPU-s  {secs / wall * 100:6.1f}% of a core   "
              f"{secs / n * 1000:7.2f} ms CPU per run")
    measured = sum(res.cpu.values())
    ticks = psutil.cpu_count() or 1
    irq = (res.system.get("irq", 0) + res.system.get("softirq", 0)) / total * ticks * wall
    other = max(0.0, busy / total * ticks * wall - measured - irq)
    print(f"     {'irq + softirq (kernel, no pid)':<30} {irq:7.2f} CPU-s  {irq / wall * 100:6.1f}% of a core")
    print(f"     {'other processes on the machine':<30} {other:7.2f} CPU-s  {other / wall * 100:6.1f}% of a core   "
          "(not this benchmark: noise)")
    app = sum(v for k, v in res.cpu.items() if not k.startswith("bench"))
    print(f"     {'all platform processes':<30} {app:7.2f} CPU-s  {app / wall * 100:6.1f}% of a core   "
          f"{app / n * 1000:7.2f} ms CPU per run  -> CPU-bound ceiling ~{cores / (app / n):.0f} runs/s on {cores} cores")
    if res.gaps:
        print("   latency between consecutive events of a run (recorded_at, before commit; ms):")
        for key, values in res.gaps:
            print(f"     {key:<52} p50 {pct(values, 50):8.2f}   p99 {pct(values, 99):8.2f}   max {max(values):8.2f}"
                  f"   (n={len(values)})")


# -- py-spy ------------------------------------------------------------------------------------------------


def py_spy_binary() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _loc(frame: str) -> str:
    """py-spy's (shortened) file name of a frame, without the line number."""
    return frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]


def _short(frame: str) -> str:
    """'func (pkg/mod.py:12)' -> 'func (pkg/mod.py)'."""
    return f"{frame.partition(' (')[0]} ({_loc(frame)})"


def _package(frame: str) -> str:
    loc = _loc(frame)
    if loc.startswith(("libs/", "services/")):
        return loc
    top = loc.split("/", 1)[0].removesuffix(".py")
    return f"stdlib:{top}" if top in sys.stdlib_module_names or top.startswith("<frozen") else top


ROOT_FRAMES = {
    "_run_module_as_main", "_run_code", "<module>", "run", "Runner.run", "asyncio_run", "serve", "Server.run",
    "Server.serve", "BaseEventLoop.run_until_complete", "BaseEventLoop.run_forever", "BaseEventLoop._run_once",
    "Handle._run", "Thread._bootstrap", "Thread._bootstrap_inner", "Thread.run", "Context.run",
}


def _fn(frame: str) -> str:
    return frame.partition(" (")[0]


def _is_project(frame: str) -> bool:
    loc = _loc(frame)
    return (loc.startswith(("libs/", "services/")) and not loc.endswith(("__main__.py", "events/service.py"))
            and _fn(frame) != "<module>")


def _activity(frames: list[str]) -> str:
    """What a sample was doing: the innermost project frame, else the first library frame below the loop."""
    for frame in reversed(frames):
        if _is_project(frame):
            return _short(frame)
    for frame in frames:
        if _fn(frame) not in ROOT_FRAMES:
            return _short(frame)
    return _short(frames[-1])


def _kind(frames: list[str]) -> str:
    """A coarse bucket for a sample, checked in order."""
    leaf, joined = frames[-1], ";".join(frames)
    if "run_in_threadpool" in joined or "WorkerThread" in joined or "to_thread" in joined:
        return "FastStream/fast_depends thread hop (anyio worker thread, queue, GIL hand-off)"
    if _fn(leaf) == "EpollSelector.select":
        return "in epoll_wait but not idle (woken, waiting for a CPU)"
    if "(structlog/" in joined or "(logging/" in joined:
        return "logging (structlog / stdlib logging)"
    if "sock_send" in leaf or (_fn(leaf).endswith(".write") and "selector_events" in leaf):
        return "socket send() syscalls (incl. preemption by the woken peer on 2 cores)"
    if "_read_ready" in leaf:
        return "socket recv() syscalls"
    pkg = _package(leaf)
    if pkg.startswith(("libs/", "services/")):
        return "Weft code (own frames)"
    if pkg == "asyncpg":
        return "asyncpg (Python parts)"
    if pkg in ("nats", "faststream", "fast_depends", "anyio"):
        return "nats-py / FastStream / fast_depends / anyio (Python)"
    if pkg in ("litestar", "uvicorn", "h11", "starlette", "jwt"):
        return "HTTP stack (litestar, uvicorn, h11, pyjwt)"
    if pkg in ("stdlib:asyncio", "stdlib:selectors", "stdlib:contextlib"):
        return "asyncio event loop (tasks, futures, handles, context managers)"
    if pkg in ("msgspec", "stdlib:json", "stdlib:uuid", "stdlib:datetime"):
        return "JSON, uuid, datetime"
    return f"other: {pkg}"


def summarize_profile(name: str, path: Path, duration: float, rate: int, top: int = 12) -> None:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    total = sum(c for _, c in stacks)
    if not total:
        print(f"  {name}: no samples")
        return
    self_fn: Counter = Counter()
    kinds: Counter = Counter()
    activity: Counter = Counter()
    incl: Counter = Counter()
    for frames, count in stacks:
        self_fn[_short(frames[-1])] += count
        kinds[_kind(frames)] += count
        activity[_activity(frames)] += count
        for f in {_short(f) for f in frames if _fn(f) not in ROOT_FRAMES}:
            incl[f] += count
    print(f"\n  {name}: {total} non-idle samples in {duration:.0f} s at {rate} Hz (all threads) = "
          f"{total / (duration * rate) * 100:.0f}% of one thread's time")
    print("    by kind of work (leaf frame, or a marker anywhere on the stack):")
    for kind, c in kinds.most_common(top):
        print(f"      {c / total * 100:5.1f}%  {kind}")
    print("    by activity (innermost Weft frame on the stack, else the outermost library frame):")
    for act, c in activity.most_common(top):
        print(f"      {c / total * 100:5.1f}%  {act}")
    print("    self time by function (leaf frame):")
    for fn, c in self_fn.most_common(top):
        print(f"      {c / total * 100:5.1f}%  {fn}")
    print("    inclusive time (frames on the stack, loop/thread roots left out):")
    for fn, c in incl.most_common(top + 4):
        print(f"      {c / total * 100:5.1f}%  {fn}")


# -- main --------------------------------------------------------------------------------------------------


async def count_statements(admin: asyncpg.Connection, port: int, token: str, workflow_id: str,
                           completions: Completions, runs: int, log_path: Path) -> None:
    """Every statement Postgres receives for `runs` runs at 1 in flight (log_statement=all for that window)."""
    import re

    await asyncio.sleep(1.0)
    await admin.execute("ALTER SYSTEM SET log_statement = 'all'")
    await admin.fetchval("SELECT pg_reload_conf()")
    await asyncio.sleep(0.5)
    mark = log_path.stat().st_size
    res = await run_level(port, token, workflow_id, completions, 1, runs, 30)
    await asyncio.sleep(1.0)  # the relay's and the executor's tail of the last run
    await admin.execute("ALTER SYSTEM RESET log_statement")
    await admin.fetchval("SELECT pg_reload_conf()")
    with log_path.open("rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    counts: Counter = Counter()
    for line in text.splitlines():
        m = re.search(r"LOG:\s+(?:statement|execute [^:]*):\s*(.*)", line)
        if not m or "log_statement" in m.group(1) or "pg_reload_conf" in m.group(1):
            continue
        stmt = re.sub(r"\s+", " ", m.group(1))
        if stmt.startswith("SELECT global_position"):
            stmt = "SELECT <event columns> FROM events " + stmt.split(" FROM events ", 1)[-1]
        counts[stmt[:100]] += 1
    n = max(len(res.completed), 1)
    print(f"\n== Postgres statements per run ({len(res.completed)} runs at 1 in flight, log_statement=all): "
          f"{sum(counts.values()) / n:.1f} in total (each one a round trip)")
    for stmt, c in counts.most_common(14):
        print(f"  {c / n:6.1f}  {stmt}")


async def wait_relay_caught_up(admin: asyncpg.Connection, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Compared as (xid, position) cursors, the global order's key (docs/decisions/0032).
        head = await admin.fetchrow("SELECT xid, global_position FROM events ORDER BY xid DESC, global_position DESC"
                                    " LIMIT 1")
        at = await admin.fetchrow("SELECT e.xid, e.global_position FROM checkpoints c JOIN events e"
                                  " ON e.global_position = c.position WHERE c.name = $1", CHECKPOINT)
        if head is None or (at is not None and tuple(at) >= tuple(head)):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("relay did not catch up")


async def bench_http(args, ports: dict[str, int], dsn: str, procs: dict, pg: EmbeddedPostgres, nats_srv: EmbeddedNats,
                     profile_dir: Path) -> list[LevelResult]:
    cores = psutil.cpu_count() or 1
    token = issue_token(load_settings({}), TENANT, "bench")
    admin = await asyncpg.connect(dsn)
    nc = await nats.connect(nats_srv.url)
    completions = await Completions.subscribed(nc, TENANT)
    try:
        await wait_relay_caught_up(admin)
        conn = HttpConn(ports["gateway"], token)
        status, body = await conn.request("POST", "/api/v2/workflows", json.dumps(
            {"name": "bench no-op x3", "definition": DEFINITION}).encode())
        await conn.close()
        assert status == 201, (status, body[:300])
        workflow_id = json.loads(body)["workflow"]["id"]
        print(f"\nworkflow {workflow_id}: a -> b -> c (noop), concurrency unlimited")

        warm = await run_level(ports["gateway"], token, workflow_id, completions, 8, args.warmup, 30)
        assert warm.completed, f"warm-up: no run completed ({dict(warm.errors)})"
        rid = warm.completed[0].rid
        rows = await admin.fetch(
            "SELECT version, type, data->>'step_id' AS step, xmin::text AS tx FROM events WHERE stream_id = $1"
            " ORDER BY version", f"run-{rid}")
        events_per_run = len(rows)
        appends_per_run = len({r["tx"] for r in rows})
        print(f"warm-up: {len(warm.completed)} runs at 8 in flight, {warm.runs_per_s:.1f} runs/s")
        print(f"one run's events ({events_per_run} events in {appends_per_run} append transactions): "
              + ", ".join(r["type"] + (f"({r['step']})" if r["step"] else "") for r in rows))

        pids = {name: procs[name].proc.pid for name in SERVICES}
        meter = CpuMeter(pids, pg.proc.pid, nats_srv.proc.pid)
        results: list[LevelResult] = []
        levels = [(1, args.idle_runs)] if args.idle_runs else []
        levels += [(int(x), args.runs) for x in args.levels.split(",") if x]
        for inflight, total in levels:
            await asyncio.sleep(1.0)
            db0, nats0, cpu0 = await db_counters(admin), nats_varz(nats_srv.monitor_port), meter.snapshot()
            res = await run_level(ports["gateway"], token, workflow_id, completions, inflight, total, args.cap_s)
            cpu1, nats1 = meter.snapshot(), nats_varz(nats_srv.monitor_port)
            await asyncio.sleep(1.2)  # backends flush pg_stat_database counters at most once a second
            db1 = await db_counters(admin)
            res.cpu, res.system = CpuMeter.delta(cpu0, cpu1)
            res.db = {k: db1[k] - db0[k] for k in db0}
            res.nats = {k: nats1[k] - nats0[k] for k in nats0}
            perf_to_wall = time.time() - time.perf_counter()
            done_wall = {r.rid: r.t_done + perf_to_wall for r in res.completed}
            res.gaps, _ = await event_gaps(admin, res.records, done_wall)
            print_level(res, cores)
            results.append(res)

        if args.profile_level and (spy := py_spy_binary()):
            await asyncio.sleep(1.0)
            print(f"\n== profile: {args.profile_level} in flight for ~{args.profile_s + 3:.0f} s; py-spy samples "
                  f"{', '.join(PROFILED)} for {args.profile_s:.0f} s at {args.profile_rate} Hz (--nonblocking)")
            cpu0 = meter.snapshot()
            load = asyncio.create_task(run_level(ports["gateway"], token, workflow_id, completions,
                                                 args.profile_level, 10**9, args.profile_s + 3))
            await asyncio.sleep(1.5)
            spies = {}
            for name in PROFILED:
                out = profile_dir / f"{name}.txt"
                spies[name] = (out, subprocess.Popen(
                    [spy, "record", "-o", str(out), "--format", "raw", "-p", str(pids[name]), "-d",
                     str(int(args.profile_s)), "-r", str(args.profile_rate), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            for name, (_, spy_proc) in spies.items():
                while spy_proc.poll() is None:
                    await asyncio.sleep(0.2)
                if spy_proc.returncode != 0:
                    print(f"  py-spy {name} failed: {spy_proc.stderr.read().decode(errors='replace')[-400:]}")
            res = await load
            cpu1 = meter.snapshot()
            res.cpu, res.system = CpuMeter.delta(cpu0, cpu1)
            done = res.completed
            e2e = [(r.t_done - r.t_submit) * 1000 for r in done]
            print(f"  under the profilers: {len(done)} runs, {res.runs_per_s:.1f} runs/s, "
                  f"p50 {pct(e2e, 50):.1f} ms, p99 {pct(e2e, 99):.1f} ms; CPU % of a core: "
                  + ", ".join(f"{k.split(' ')[0]} {v / res.wall * 100:.0f}" for k, v in
                              sorted(res.cpu.items(), key=lambda kv: -kv[1])))
            for name, (out, _) in spies.items():
                if out.exists():
                    summarize_profile(name, out, args.profile_s, args.profile_rate)
        elif args.profile_level:
            print("\n(py-spy not installed: `.venv/bin/pip install py-spy` for the profile section)")
        if args.statement_runs:
            await count_statements(admin, ports["gateway"], token, workflow_id, completions, args.statement_runs,
                                   pg.log_path)
        results.append(LevelResult(inflight=-1))  # marker: carries events/appends per run
        results[-1].db = {"events_per_run": events_per_run, "appends_per_run": appends_per_run,
                          "runs_total": len(completions.done)}
        return results
    finally:
        await nc.close()
        await admin.close()


def summary(rates: dict[str, float], results: list[LevelResult], cores: int) -> None:
    marker = results[-1]
    events, appends = marker.db["events_per_run"], marker.db["appends_per_run"]
    levels = [r for r in results[:-1] if r.inflight > 1]
    idle = [r for r in results[:-1] if r.inflight == 1]
    print("\n== summary")
    print(f"  {'in flight':>9}  {'runs/s':>8}  {'p50 e2e ms':>10}  {'p99 e2e ms':>10}  {'p50 submit':>10}  "
          f"{'p99 submit':>10}  {'runs':>5}")
    for r in idle + levels:
        e2e = [(x.t_done - x.t_submit) * 1000 for x in r.completed]
        sub = [(x.t_response - x.t_submit) * 1000 for x in r.records]
        print(f"  {r.inflight:>9}  {r.runs_per_s:8.1f}  {pct(e2e, 50):10.2f}  {pct(e2e, 99):10.2f}  {pct(sub, 50):10.2f}"
              f"  {pct(sub, 99):10.2f}  {len(r.completed):>5}")
    best = max(levels, key=lambda r: r.runs_per_s)
    print(f"  raw ceiling (same run): EventStore.append {rates['store1']:.0f}/s (1 writer), {rates['store8']:.0f}/s "
          f"(8 writers); raw INSERT {rates['raw1']:.0f}/s (1 writer), {rates['raw8']:.0f}/s (8 writers)")
    store_best = max(rates["store1"], rates["store8"])
    raw_best = max(rates["raw1"], rates["raw8"])
    print(f"  one run = {events} events in {appends} append transactions")
    # Each append is one commit whatever it holds, so the ceiling divides by append transactions per run.
    per_run = max(appends, 1)
    print(f"  ceiling runs/s ~= appends/s / append transactions per run: EventStore {store_best:.0f} / {per_run} = "
          f"{store_best / per_run:.1f} runs/s; raw INSERT {raw_best:.0f} / {per_run} = {raw_best / per_run:.1f} runs/s")
    print(f"  best measured {best.runs_per_s:.1f} runs/s at {best.inflight} in flight = "
          f"{best.runs_per_s / (store_best / per_run) * 100:.0f}% of the EventStore ceiling, "
          f"{best.runs_per_s / (raw_best / per_run) * 100:.0f}% of the raw INSERT ceiling")
    # The budget the goal leaves, next to what JetStream alone takes for the messages a run stores (DESIGN 3:
    # every event its own message, sync_interval always): one command plus the relayed events.
    budget_ms = cores / GOAL_RUNS_S * 1000
    stored = 1 + events
    js_ms = stored * rates["js_cpu_us"] / 1000
    n = max(len(best.completed), 1)
    spent = {k: v / n * 1000 for k, v in best.cpu.items() if not k.startswith("bench")}
    print(f"  CPU budget at the goal: {cores} cores / {GOAL_RUNS_S:.0f} runs/s = {budget_ms:.2f} ms per run, all processes;"
          f" spent at {best.inflight} in flight: {sum(spent.values()):.2f} ms")
    print(f"  JetStream alone, measured above (the cheaper depth): {stored} stored messages per run x "
          f"{rates['js_cpu_us']:.0f} us = "
          f"{js_ms:.2f} ms of nats-server CPU per run ({js_ms / budget_ms * 100:.0f}% of the budget; nats-server spent "
          f"{spent.get('nats-server', 0):.2f} ms per run in the level, with consumers, replies and acks)")
    print(f"  goal >= {GOAL_RUNS_S:.0f} runs/s on 2 cores ({cores} here): {best.runs_per_s:.1f} -> "
          f"{verdict(best.runs_per_s >= GOAL_RUNS_S)}")
    for low in idle + levels:
        low_p50 = pct([(x.t_done - x.t_submit) * 1000 for x in low.completed], 50)
        print(f"  goal p50 < {GOAL_P50_MS:.0f} ms at {low.inflight:>3} in flight: {low_p50:8.2f} ms -> "
              f"{verdict(low_p50 < GOAL_P50_MS)}")


def run_peer(args) -> list[dict] | None:
    """DBOS on its own Postgres, in a subprocess (bench/bench_dbos.py); None when `dbos` is not installed."""
    if importlib.util.find_spec("dbos") is None:
        print("\n(DBOS peer skipped: `pip install -e .[bench]` installs dbos)")
        return None
    levels = ",".join(["1", *[x for x in args.levels.split(",") if x]])
    print(f"\n== peer: DBOS Transact, same 3-step no-op workflow, own Postgres (fsync on), levels {levels}")
    out = subprocess.run([sys.executable, "-m", "bench.bench_dbos", "--json", "--runs", str(args.runs),
                          "--idle-runs", str(max(args.idle_runs, 20)), "--levels", levels],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        print(f"  DBOS peer failed: {out.stderr[-800:]}")
        return None
    peer = json.loads(out.stdout.strip().splitlines()[-1])
    for r in peer:
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_run"].items())
        print(f"  DBOS {r['in_flight']:>4} in flight: {r['runs_per_s']:7.1f} runs/s  p50 {r['p50_ms']:6.2f} ms  "
              f"p99 {r['p99_ms']:6.2f} ms  max {r['max_ms']:6.1f} ms  CPU per run (ms): {cpu}")
    return peer


def compare_with_peer(peer: list[dict], results: list[LevelResult]) -> None:
    """Weft/DBOS ratios from this one run: throughput at saturation, latency at 1 in flight, CPU per run."""
    levels = [r for r in results[:-1] if r.inflight > 1]
    idle = [r for r in results[:-1] if r.inflight == 1]
    best = max(levels, key=lambda r: r.runs_per_s)
    peer_best = max((r for r in peer if r["in_flight"] > 1), key=lambda r: r["runs_per_s"])
    peer_idle = next((r for r in peer if r["in_flight"] == 1), None)
    n = max(len(best.completed), 1)
    weft_cpu = sum(v for k, v in best.cpu.items() if not k.startswith("bench")) / n * 1000
    peer_cpu = sum(peer_best["cpu_ms_per_run"].values())
    print("\n== Weft / DBOS (same run, same machine)")
    print(f"  {'':34} {'Weft':>10} {'DBOS':>10} {'Weft/DBOS':>10}  aim")
    print(f"  {'runs/s, saturated':34} {best.runs_per_s:10.1f} {peer_best['runs_per_s']:10.1f} "
          f"{best.runs_per_s / peer_best['runs_per_s']:10.2f}  >= 2 (Weft at {best.inflight}, DBOS at "
          f"{peer_best['in_flight']} in flight)")
    if idle and peer_idle:
        e2e = [(x.t_done - x.t_submit) * 1000 for x in idle[0].completed]
        for label, mine, theirs, aim in (("p50 submit->completed, 1 in flight", pct(e2e, 50), peer_idle["p50_ms"], "<= 0.5, <= 5 ms"),
                                         ("p99, 1 in flight", pct(e2e, 99), peer_idle["p99_ms"], "<= 15 ms"),
                                         ("max, 1 in flight", max(e2e), peer_idle["max_ms"], "")):
            print(f"  {label:34} {mine:10.2f} {theirs:10.2f} {mine / theirs:10.2f}  {aim}")
    print(f"  {'CPU ms per run, all processes':34} {weft_cpu:10.2f} {peer_cpu:10.2f} {weft_cpu / peer_cpu:10.2f}  "
          f"<= 6 ms (at the saturated levels)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=400, help="runs per level (default 400)")
    parser.add_argument("--cap-s", type=float, default=45.0,
                        help="stop submitting after this many seconds of a level (default 45; in-flight runs drain)")
    parser.add_argument("--idle-runs", type=int, default=20,
                        help="runs at 1 in flight first, the unloaded latency; 0 skips (default 20)")
    parser.add_argument("--levels", default="8,32,128", help="runs in flight per level (default 8,32,128)")
    parser.add_argument("--warmup", type=int, default=24, help="warm-up runs at 8 in flight (default 24)")
    parser.add_argument("--ceiling-n", type=int, default=1000, help="appends per ceiling measurement (default 1000)")
    parser.add_argument("--profile-level", type=int, default=128, help="in flight while profiling; 0 skips (default 128)")
    parser.add_argument("--profile-s", type=float, default=10.0, help="py-spy duration (default 10)")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--statement-runs", type=int, default=20,
                        help="runs whose Postgres statements are counted (log_statement=all); 0 skips (default 20)")
    parser.add_argument("--log-level", default="info", help="WEFT_LOG_LEVEL of the services (default info, as deployed)")
    parser.add_argument("--no-peer", action="store_true", help="skip the DBOS peer (bench/bench_dbos.py)")
    args = parser.parse_args()

    cores = psutil.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="weft-bench-runs-"))
    profile_dir = Path(tempfile.mkdtemp(prefix="weft-bench-runs-profiles-"))
    pg = EmbeddedPostgres(root / "pg", free_port(), root / "postgres.log")
    nats_srv = EmbeddedNats(root / "nats", free_port())
    procs: dict = {}
    ok = False
    print(f"python {sys.version.split()[0]}, {cores} CPUs ({os.cpu_count()} visible), log level {args.log_level}")
    try:  # read-only: which code was measured
        head = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        print(f"code: {head or 'unknown'}")
    except (OSError, subprocess.SubprocessError):
        pass
    idle_busy = psutil.cpu_percent(interval=1.0)
    print(f"machine busy before starting: {idle_busy:.0f}% of {cores} cores"
          + ("  (WARNING: other load on the machine will skew every number below)" if idle_busy > 10 else ""))
    peer = None if args.no_peer else run_peer(args)  # first, while nothing of Weft's runs
    try:
        t0 = time.perf_counter()
        pg.start()
        pg.create_database("weft_bench")
        nats_srv.start()
        dsn = pg.dsn("weft_bench")
        asyncio.run(migrate(dsn))
        print(f"postgres + nats-server up and migrated in {time.perf_counter() - t0:.1f} s")

        print(f"\n== raw append ceiling on the events table (fsync on, each append its own commit, n={args.ceiling_n})")
        rates = asyncio.run(measure_ceiling(dsn, args.ceiling_n))
        print(f"\n== JetStream ceiling on the same nats-server (sync_interval {nats_srv.sync_interval}, file storage, n={args.ceiling_n * 3})")
        rates.update(asyncio.run(measure_jetstream(nats_srv.url, nats_srv.proc.pid, args.ceiling_n * 3)))

        t0 = time.perf_counter()
        procs, ports = start_services(root, list(SERVICES), dsn, nats_srv.url,
                                      {"WEFT_LOG_LEVEL": args.log_level, "WEFT_MAIL_SINK_DIR": str(root / "mail"),
                                       # one user submits every run: keep the v2 limiter's cost, not its limit
                                       "WEFT_V2_RATE_LIMIT_PER_MINUTE": "10000000"})
        print(f"\n{', '.join(SERVICES)} up in {time.perf_counter() - t0:.1f} s (uvicorn, one process each)")

        results = asyncio.run(bench_http(args, ports, dsn, procs, pg, nats_srv, profile_dir))
        summary(rates, results, cores)
        if peer:
            compare_with_peer(peer, results)
        runs_total = max(results[-1].db["runs_total"], 1)
        print(f"\nservice log lines (WEFT_LOG_LEVEL={args.log_level}) per completed run ({runs_total} runs): " + ", ".join(
            f"{log.stem} {sum(1 for _ in log.open(errors='replace')) / runs_total:.1f}"
            for log in sorted((root / "logs").glob("*.log"))))
        print(f"\nraw py-spy profiles kept in {profile_dir}")
        ok = True
    finally:
        stop_all(root, procs, nats_srv, pg, ok)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
