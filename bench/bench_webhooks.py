"""Webhook delivery cost: what Weft adds to each webhook over a bare POST of the same bytes.

    .venv/bin/python bench/bench_webhooks.py [--n 400] [--concurrency 16]

Starts its own Postgres from the pgserver wheel (fsync on) and a loopback receiver, then measures in one run:

  bare      POSTs of the same body through the guarded client to the receiver (the floor: HTTP on loopback)
  webhooks  deliveries end to end in-process, one run event each: the intake (endpoint check, the run read
            and folded, one transaction with the intake record, delivery row and lease timer), then the
            attempt (load, sign both ways, POST, one transaction recording it and cancelling the timer);
            every transaction a tenant one under row-level security

and prints deliveries per second, attempt latency percentiles and the ratio to the floor. No goal is
asserted: the point is to see what durability costs per webhook (a few transactions) next to the POST.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import pct  # noqa: E402
from libs.events.db import create_pool  # noqa: E402
from deploy.local.embedded import EmbeddedPostgres, free_port  # noqa: E402
from libs.events.migrate import migrate  # noqa: E402
from libs.adapters.outbound import GuardedHttpClient  # noqa: E402
from libs.readmodels import project  # noqa: E402
from libs.events.schemas import Metadata  # noqa: E402
from libs.events.schemas.run import RunCreated, RunStarted  # noqa: E402
from libs.events.settings import load_settings  # noqa: E402
from libs.events.store import EventStore  # noqa: E402
from libs.adapters.webhooks import create_endpoint  # noqa: E402
from services.notifier.webhook_delivery import WebhookSender  # noqa: E402
from services.notifier.webhooks import WebhookIntake  # noqa: E402
from tests.fakes.webhook_receiver import WebhookReceiver  # noqa: E402

TENANT = "tbench"


async def bounded(concurrency: int, jobs: list) -> list[float]:
    """Run the coroutine factories `concurrency` at a time; each one's latency in ms."""
    slots, latencies = asyncio.Semaphore(concurrency), []

    async def one(job) -> None:
        async with slots:
            started = time.perf_counter()
            await job()
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(one(j) for j in jobs))
    return latencies


def report(label: str, n: int, elapsed: float, latencies: list[float]) -> float:
    rate = n / elapsed
    print(f"  {label:<10} {n:>5} in {elapsed:6.2f} s  {rate:8.0f} /s   p50 {pct(latencies, 50):6.1f} ms"
          f"  p99 {pct(latencies, 99):6.1f} ms", flush=True)
    return rate


async def bench(dsn: str, n: int, concurrency: int) -> None:
    await migrate(dsn)
    settings = load_settings({}, database_url=dsn, outbound_allow_hosts="127.0.0.1:*", webhook_lease_s=600.0,
                             webhook_workers=concurrency)
    pool = await create_pool(settings, max_size=concurrency + 4)
    store = EventStore(pool, app_role=settings.db_app_role, projector=project)
    with WebhookReceiver() as receiver:
        client = GuardedHttpClient(settings)
        sender = WebhookSender(store, settings, client)
        intake = WebhookIntake(store, settings, sender)
        async with store.tenant_transaction(TENANT) as conn:
            await create_endpoint(conn, tenant_id=TENANT, url=receiver.url("/ok"), events=["execution.started"],
                                  secret="bench-webhook-secret")
        # One run per delivery, written before timing starts: the benchmark measures delivery, not runs.
        events = []
        for _ in range(n):
            run_id, now = uuid.uuid4(), datetime.now(UTC)
            await store.append(f"run-{run_id}", 0, [
                RunCreated(run_id=run_id, workflow_id=uuid.uuid4(), workflow_version=1, definition={"nodes": []},
                           inputs={}, created_by="bench", at=now),
                RunStarted(run_id=run_id, at=now)], metadata=Metadata(tenant_id=TENANT, actor="bench"))
            last = (await store.read_stream(TENANT, f"run-{run_id}"))[-1]
            events.append((last.event_id, last.stream_id, last.version))
        body = b'{"event":"execution.started","data":{"status":"running"}}'
        url = receiver.url("/ok")

        def bare(i: int):
            return lambda: client.request("POST", url, content=body, headers={"webhook-id": f"bare-{i}"})

        started = time.perf_counter()
        latencies = await bounded(concurrency, [bare(i) for i in range(n)])
        floor = report("bare", n, time.perf_counter() - started, latencies)

        def delivery(event):
            async def go() -> None:
                (delivery_id,) = await intake.record(TENANT, event[0], event[1], event[2], "execution.started")
                await sender.attempt(TENANT, delivery_id, 1)
            return go

        started = time.perf_counter()
        latencies = await bounded(concurrency, [delivery(e) for e in events])
        rate = report("webhooks", n, time.perf_counter() - started, latencies)
        delivered = await pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
        await client.aclose()
    await pool.close()
    assert delivered == n, f"{delivered} of {n} delivered"
    print(f"  webhooks / bare throughput: {rate / floor:.2f} (each webhook: 5 short transactions + the POST)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="deliveries (default 400)")
    parser.add_argument("--concurrency", type=int, default=16, help="deliveries at once (default 16)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="weft-bench-webhooks-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", free_port(), Path(tmp) / "postgres.log")
        pg.start()
        try:
            pg.create_database("weft_bench")
            asyncio.run(bench(pg.dsn("weft_bench"), args.n, args.concurrency))
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
