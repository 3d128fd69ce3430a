"""The production shape under faults: a 3-node JetStream cluster (streams R3) and several replicas of each
service, under a load of executes. kill -9 the EVENTS stream's leader node and restart it, then kill -9
the leading relay and the leading scheduler: every accepted run completes once, each effect is applied
once, every durable delay fires once, and every event in Postgres is in the stream exactly once. Every
process logs in as production does: members of weft_system or weft_app, never the owner.

The short variant runs in the suite; the soak variant (-m soak) runs every service doubled, three
executors, and a longer load."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import nats
import pytest

from deploy.local.embedded import EmbeddedPostgres, free_port
from deploy.local.nats_cluster import NatsCluster
from deploy.local.stack import wait_http
from libs.events.bus import EVENTS_STREAM
from libs.events.migrate import migrate
from tests.fakes.slow_receiver import SlowEffectReceiver
from tests.test_executor_replicas import Replicas
from tests.test_faults import (DATABASE, Submitted, assert_completed_once, create_workflow, db_fetch, execute,
                               http_node, run_events, shape_node, until, wait_dead)

SHORT = ("gateway-1", "planner-1", "relay-1", "relay-2", "scheduler-1", "scheduler-2", "executor-1", "executor-2")
SOAK = (*SHORT, "gateway-2", "planner-2", "executor-3", "notifier-1", "notifier-2")
STEPS = ("a", "d", "b", "shape")


# The production logins (docs/operations.md, "Database roles"): nothing but the migration runs as the owner.
APP_LOGIN_PROCESSES = {"gateway", "planner", "notifier"}


class ClusterStack(Replicas):
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway-1']}"

    def login_url(self, name: str) -> str:
        rest = self.dsn.split("@", 1)[1]
        if name.split("-")[0] in APP_LOGIN_PROCESSES:
            return f"postgresql://weft_app_login@{rest}"
        return f"postgresql://weft_system_login@{rest}?role=weft_system"

    def env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = super().env(name, {"WEFT_NATS_STREAM_REPLICAS": "3"} | (extra or {}))
        return env | {"WEFT_DATABASE_URL": self.login_url(name)}


async def create_logins(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE ROLE weft_system_login LOGIN IN ROLE weft_system;"
                           " CREATE ROLE weft_app_login LOGIN IN ROLE weft_app")
    finally:
        await conn.close()


def stack(tmp_path_factory: pytest.TempPathFactory, names: tuple[str, ...]) -> Iterator[ClusterStack]:
    root = tmp_path_factory.mktemp("cluster")
    pg = EmbeddedPostgres(root / "pg", free_port(), root / "postgres.log")
    natsc = NatsCluster(root / "nats", 3)
    receiver = SlowEffectReceiver()
    c = ClusterStack(root, pg, natsc, receiver, {name: free_port() for name in names})
    try:
        pg.start()
        pg.create_database(DATABASE)
        natsc.start()
        asyncio.run(migrate(c.dsn))
        asyncio.run(create_logins(c.dsn))
        receiver.start()
        for name in names:
            c.start(name, wait=False)
        for name in names:
            wait_http(c.ports[name], timeout=120)
        yield c
    finally:
        for proc in c.procs.values():
            proc.stop(timeout=10)
        receiver.stop()
        natsc.stop()
        pg.stop()


def leader(c: ClusterStack, kind: str) -> str:
    """The replica whose log says it leads (relay_leading / scheduler_leading), the live one if several did."""
    for name, proc in c.procs.items():
        if name.startswith(kind) and proc.alive() and f"{kind}_leading" in (c.root / "logs" / f"{name}.log").read_text():
            return name
    raise AssertionError(f"no live {kind} leads")


async def stream_info(c: ClusterStack):
    nc = await nats.connect(c.nats.url.split(","), connect_timeout=2, max_reconnect_attempts=2)
    try:
        return await nc.jetstream().stream_info(EVENTS_STREAM)
    finally:
        await nc.close()


async def run_faults(c: ClusterStack, load_s: float, workers: int) -> None:
    async with c.client() as client:
        workflow_id = await create_workflow(client, "cluster", [
            http_node("a", c, delay=0.2), {"id": "d", "type": "delay", "depends_on": ["a"], "config": {"seconds": 1}},
            http_node("b", c, depends_on=["d"]), shape_node("b")])
    results: list[Submitted] = []
    stop = asyncio.Event()

    async def load(w: int) -> None:
        async with c.client() as client:
            i = 0
            while not stop.is_set():
                marker = f"cl-{w}-{i}-{uuid.uuid4().hex[:6]}"
                try:
                    results.append(await execute(client, workflow_id, marker, key=marker))
                except httpx.TransportError as exc:
                    results.append(Submitted(-1, marker, None, None, repr(exc)))
                i += 1
                await asyncio.sleep(0.1)

    clients = [asyncio.create_task(load(w)) for w in range(workers)]
    try:
        await asyncio.sleep(load_s / 3)
        info = await stream_info(c)
        node = next(n for n in c.nats.nodes if n.name == info.cluster.leader)
        assert info.config.num_replicas == 3
        node.kill()
        await asyncio.sleep(3.0)
        await asyncio.to_thread(node.start)
        await until(lambda: asyncio.to_thread(node.jetstream_ready), bool, 30, what="the restarted node ready")
        killed = []
        # A burst, so the leading relay dies mid-publish with its checkpoint behind (it saves at most once a
        # second under load): the new leader republishes, and only Nats-Msg-Id dedupe keeps the stream exact.
        async with c.client() as client:
            burst = asyncio.gather(*(execute(client, workflow_id, m, key=m)
                                     for m in (f"burst-{i}-{uuid.uuid4().hex[:6]}" for i in range(16))))
            await until(lambda: db_fetch(c, "SELECT 1 FROM events WHERE data->>'inputs' LIKE '%burst-%' LIMIT 1"),
                        bool, 30, every=0.02, what="the burst being written")
            for kind in ("relay", "scheduler"):
                name = leader(c, kind)
                c.kill(name)
                await wait_dead(c.procs[name], 10)
                killed.append(name)
            results.extend(await burst)
        await until(lambda: asyncio.to_thread(lambda: leader(c, "relay")), bool, 30, what="a new relay leader")
        await asyncio.sleep(load_s / 3)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 60)
    async with c.client() as client:  # 503 = not acknowledged: a client retries with its key
        retried = [await execute(client, workflow_id, r.marker, key=r.marker) for r in results if r.status not in (201, 202)]
    accepted = [r for r in results if r.status in (201, 202)] + [r for r in retried if r.status in (201, 202)]
    events = await until(lambda: run_events(c, [r.run_id for r in accepted]),
                         lambda evs: all(any(t in ("RunCompleted", "RunFailed") for t, _, _ in e) for e in evs.values()),
                         90, what="every accepted run finished")
    completed = sum(1 for e in events.values() if any(t == "RunCompleted" for t, _, _ in e))
    duplicates = sum(max(0, c.receiver.effects_for(r.marker) - 2) for r in accepted)
    duplicates += sum(max(0, sum(1 for t, s, _ in e if t == "StepCompleted" and s == sid) - 1)
                      for e in events.values() for sid in STEPS)
    stored = (await db_fetch(c, "SELECT count(*) AS n FROM events"))[0]["n"]
    published = await until(lambda: stream_info(c), lambda i: i.state.messages >= stored, 30,
                            what="every stored event published")
    logins = await db_fetch(c, "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = $1", DATABASE)
    assert {r["usename"] for r in logins} >= {"weft_system_login", "weft_app_login"}, logins
    print(f"\ncluster faults (killed NATS {node.name}, {', '.join(killed)}): accepted {len(accepted)}, completed "
          f"{completed}, duplicates {duplicates}, lost {len(accepted) - completed}, events stored {stored}, "
          f"published {published.state.messages}, refused then retried {len(retried)}")
    assert len(accepted) == len(results), [r for r in retried if r.status not in (201, 202)][:3]
    assert_completed_once(events, STEPS)
    assert duplicates == 0 and completed == len(accepted)
    assert published.state.messages == stored, "an event published twice or one never published"


@pytest.fixture(scope="module")
def short_stack(tmp_path_factory) -> Iterator[ClusterStack]:
    yield from stack(tmp_path_factory, SHORT)


# Intermittent under the full suite's load (seen once: no relay led in time); one second attempt.
@pytest.mark.flaky(reruns=1)
async def test_nats_node_relay_and_scheduler_leaders_killed_under_load(short_stack: ClusterStack):
    await run_faults(short_stack, load_s=6.0, workers=2)


@pytest.mark.soak
# Intermittent under the full suite's load (seen once: no relay led in time); one second attempt.
@pytest.mark.flaky(reruns=1)
async def test_soak_every_service_replicated_under_faults(tmp_path_factory):
    running = stack(tmp_path_factory, SOAK)
    c = await asyncio.to_thread(next, running)  # it starts processes and runs its own event loop
    try:
        await run_faults(c, load_s=60.0, workers=4)
    finally:
        await asyncio.to_thread(running.close)
