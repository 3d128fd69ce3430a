"""What the benchmarks share: percentiles, the append-ceiling writers, and starting the platform's processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec

from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from libs.events.schemas import Metadata
from libs.events.schemas.run import StepStarted
from libs.events.store import EventStore


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (nan for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


# -- the append ceiling: single-event appends through the store vs raw INSERTs of the same rows -------------


def ceiling_event(run_id: uuid.UUID, i: int) -> StepStarted:
    return StepStarted(run_id=run_id, step_id=f"step-{i}", at=datetime.now(UTC))


async def store_writer(store: EventStore, count: int, *, tenant: str, prefix: str = "run", stream_length: int = 20):
    """`count` single-event appends, each its own commit, moving to a fresh stream every `stream_length`."""
    meta = Metadata(tenant_id=tenant, correlation_id=str(uuid.uuid4()), actor="bench")
    version, sid = 0, uuid.uuid4()
    for i in range(count):
        if version == stream_length:
            version, sid = 0, uuid.uuid4()
        await store.append(f"{prefix}-{sid}", version, [ceiling_event(sid, i)], metadata=meta)
        version += 1


async def raw_writer(pool: asyncpg.Pool, count: int, *, tenant: str, prefix: str = "run", stream_length: int = 20):
    """The baseline: the same rows as plain autocommit INSERTs, the floor any store on this table pays."""
    meta = msgspec.json.encode(Metadata(tenant_id=tenant, correlation_id=str(uuid.uuid4()), actor="bench")).decode()
    version, sid = 0, uuid.uuid4()
    async with pool.acquire() as conn:
        for i in range(count):
            if version == stream_length:
                version, sid = 0, uuid.uuid4()
            version += 1
            await conn.execute(
                "INSERT INTO events (event_id, stream_id, version, type, data, metadata, tenant_id)"
                " VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7)",
                uuid.uuid4(), f"{prefix}-{sid}", version, "StepStarted",
                msgspec.json.encode(ceiling_event(sid, i)).decode(), meta, tenant,
            )


async def measure_appends(store: EventStore, pool: asyncpg.Pool, n: int, writers: int, *, tenant: str,
                          prefix: str = "run", stream_length: int = 20) -> dict[str, float]:
    """Single-event appends/s through the store and raw INSERTs/s of the same rows, with 1 and `writers` writers
    (keys store1, storeN, raw1, rawN), each line printed as it is measured. Every append is its own commit."""
    rates: dict[str, float] = {}
    for label, key, count, one in (
        ("EventStore.append (1 event), 1 writer", "store1", 1, store_writer),
        (f"EventStore.append (1 event), {writers} writers", "storeN", writers, store_writer),
        ("raw asyncpg INSERT, 1 writer", "raw1", 1, raw_writer),
        (f"raw asyncpg INSERT, {writers} writers", "rawN", writers, raw_writer),
    ):
        target = store if one is store_writer else pool
        per = n // count
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(target, per, tenant=tenant, prefix=prefix, stream_length=stream_length)
                               for _ in range(count)))
        rates[key] = per * count / (time.perf_counter() - started)
        # The writers share this one Python process: its CPU per append bounds what 8 writers can reach here.
        client_us = (time.process_time() - cpu) / (per * count) * 1e6
        print(f"  {label:<44} {per * count:>6} in {per * count / rates[key]:5.2f} s  {rates[key]:8.0f} /s"
              f"  (this process: {client_us:4.0f} us CPU each)", flush=True)
    return rates


def print_append_aims(rates: dict[str, float], writers: int) -> None:
    """The ratios issue #14 aims at, from one run's rates (measure_appends)."""
    scale, of_raw = rates["storeN"] / rates["store1"], rates["storeN"] / rates["rawN"]
    print(f"  store appends, {writers} writers / 1 writer:   {scale:5.2f}  (aim >= 3)     {verdict(scale >= 3)}")
    print(f"  store / raw INSERT, {writers} writers:         {of_raw:5.2f}  (aim >= 0.80)  {verdict(of_raw >= 0.8)}")
    print(f"  store / raw INSERT, 1 writer:          {rates['store1'] / rates['raw1']:5.2f}", flush=True)


# -- the platform's processes ---------------------------------------------------------------------------------


def start_services(root: Path, names: list[str], database_url: str, nats_url: str, extra_env: dict[str, str]):
    """Start Weft processes; returns (procs, ports). Inherited WEFT_* values are dropped: the benchmarks issue
    tokens with default settings, so the services must use them too."""
    from deploy.local.stack import PROCESSES, ServiceProcess, service_env, wait_http

    base = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")} | extra_env
    procs: dict[str, ServiceProcess] = {}
    ports: dict[str, int] = {}
    for name in names:
        ports[name] = free_port()
        env = service_env(base, name=name, port=ports[name], database_url=database_url, nats_url=nats_url)
        procs[name] = ServiceProcess(name, PROCESSES[name][0], env, root / "logs")
        procs[name].start()
    for name in names:
        wait_http(ports[name])
    return procs, ports


def stop_all(root: Path, procs: dict, nats: EmbeddedNats | None, pg: EmbeddedPostgres | None, ok: bool) -> None:
    """Stop what a benchmark started, newest first; on failure show the tail of each service log."""
    for proc in reversed(list(procs.values())):
        proc.stop()
    if nats is not None:
        nats.stop()
    if pg is not None:
        pg.stop()
    if not ok:
        for log in sorted((root / "logs").glob("*.log")):
            print(f"--- {log} (last 20 lines)", file=sys.stderr)
            print("\n".join(log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
