"""Faults (DESIGN §5, §8): kill -9 of the executor at named points and at random moments, and restarts of
nats-server and Postgres under load. Afterwards, checked in the events table itself: every accepted run is
completed, no step completed twice, and the receiver (which honours Idempotency-Key) saw each effect once.

These tests kill and restart infrastructure, so they never touch the session `infra`/`stack` fixtures:
the module starts its own Postgres, nats-server and Weft processes, and ends only those, by handle.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local.stack import PROCESSES, ServiceProcess, service_env, wait_http
from libs.security.auth import issue_token
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from libs.events.migrate import migrate
from libs.events.settings import load_settings
from services.gateway.commands import entity_id
from tests.fakes.slow_receiver import SlowEffectReceiver

SERVICES = ("relay", "planner", "executor", "gateway", "scheduler")  # the scheduler fires the delays' timers
DATABASE = "weft_faults"
TENANT = f"faults{uuid.uuid4().hex[:8]}"
# The executor sees loopback receivers, and gets an unacked message back after 3 s instead of 30.
# A fixed lease owner name: like a pod restarted in place, a restarted executor takes its runs back at once.
EXECUTOR_ENV = {"WEFT_OUTBOUND_ALLOW_HOSTS": "127.0.0.1:*", "WEFT_ACK_WAIT_S": "3", "WEFT_EXECUTOR_ID": "faults-executor"}
# How long nats-server / Postgres stay down: longer than the gateway waits for a PubAck (5 s), so a publish
# made during the outage cannot be answered before the server is back.
OUTAGE_S = float(os.environ.get("WEFT_FAULT_OUTAGE_S", "6"))
# The load here is one test user retrying far faster than a person: the v2 per-user limit would answer 429.
COMMON_ENV = {"WEFT_NAK_DELAY_S": "0.2", "WEFT_RELAY_POLL_S": "0.2", "WEFT_V2_RATE_LIMIT_PER_MINUTE": "0"}


# --- the module's own cluster ---------------------------------------------------------------------------


@dataclass
class Cluster:
    root: Path
    pg: EmbeddedPostgres
    nats: EmbeddedNats
    receiver: SlowEffectReceiver
    ports: dict[str, int]
    procs: dict[str, ServiceProcess] = field(default_factory=dict)
    retired: list[ServiceProcess] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        return self.pg.dsn(DATABASE)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        # No inherited WEFT_* (a fault point or a secret from the caller's shell must not leak in).
        base = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
        base |= COMMON_ENV | (EXECUTOR_ENV if name == "executor" else {}) | (extra or {})
        return service_env(base, name=name, port=self.ports[name], database_url=self.dsn, nats_url=self.nats.url)

    def start(self, name: str, extra: dict[str, str] | None = None, *, wait: bool = True) -> ServiceProcess:
        old = self.procs.get(name)
        assert old is None or not old.alive(), f"{name} is still running"
        if old is not None:
            self.retired.append(old)
        proc = ServiceProcess(name, PROCESSES[name][0], self.env(name, extra), self.root / "logs")
        proc.start()
        self.procs[name] = proc
        if wait:
            wait_http(self.ports[name], timeout=60)
        return proc

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def stop(self, name: str) -> None:
        self.procs[name].stop()

    def client(self) -> httpx.AsyncClient:
        token = issue_token(load_settings({}), TENANT, "faults")
        return httpx.AsyncClient(base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def started_cluster(cls: type[Cluster], tmp_path_factory: pytest.TempPathFactory, names: tuple[str, ...], *,
                    ready_s: float = 60) -> Iterator[Cluster]:
    """Postgres, nats-server, the effect receiver and the named service processes, all our own; stopped after."""
    root = tmp_path_factory.mktemp("faults")
    pg = EmbeddedPostgres(root / "pg", free_port(), root / "postgres.log")
    nats = EmbeddedNats(root / "nats", free_port())
    receiver = SlowEffectReceiver()
    c = cls(root, pg, nats, receiver, {name: free_port() for name in names})
    try:
        pg.start()
        pg.create_database(DATABASE)
        nats.start()
        asyncio.run(migrate(c.dsn))
        receiver.start()
        for name in names:
            c.start(name, wait=False)
        for name in names:
            wait_http(c.ports[name], timeout=ready_s)
        yield c
    finally:
        for proc in [*c.procs.values(), *c.retired]:
            proc.stop(timeout=10)
        receiver.stop()
        nats.stop()
        pg.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started_cluster(Cluster, tmp_path_factory, SERVICES)


# --- helpers --------------------------------------------------------------------------------------------


async def until(fn, ok, timeout: float, every: float = 0.2, what: str = "condition"):
    """Bounded poll: fn() until ok(result); fails with the last result after `timeout` seconds. An AssertionError
    from fn means "not yet" too (e.g. test_cluster_faults.leader() right after a kill, before a standby leads)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await fn()
            if ok(last):
                return last
        except (AssertionError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, httpx.TransportError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s; last: {last!r}")
        await asyncio.sleep(every)


async def db_fetch(cluster: Cluster, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Straight from Postgres as the owner (no row-level security, no read model, no API in between)."""
    conn = await asyncpg.connect(cluster.dsn, timeout=5)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close(timeout=2)


async def run_events(cluster: Cluster, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[tuple[str, str | None, int | None]]]:
    rows = await db_fetch(
        cluster,
        "SELECT stream_id, type, data->>'step_id' AS step_id, (data->>'attempt')::int AS attempt FROM events"
        " WHERE stream_id = ANY($1::text[]) ORDER BY global_position",
        [f"run-{rid}" for rid in run_ids],
    )
    out: dict[uuid.UUID, list] = {rid: [] for rid in run_ids}
    for r in rows:
        out[uuid.UUID(r["stream_id"].split("-", 1)[1])].append((r["type"], r["step_id"], r["attempt"]))
    return out


def is_finished(events: list[tuple[str, str | None, int | None]]) -> bool:
    return any(t in ("RunCompleted", "RunFailed", "RunCancelled", "RunTerminated") for t, _, _ in events)


async def wait_runs_finished(cluster: Cluster, run_ids: list[uuid.UUID], timeout: float):
    return await until(lambda: run_events(cluster, run_ids),
                       lambda evs: all(is_finished(e) for e in evs.values()), timeout,
                       what=f"all of {len(run_ids)} runs terminal in the events table")


def assert_completed_once(events_by_run: dict[uuid.UUID, list], steps: tuple[str, ...]) -> None:
    """Every run: RunCompleted exactly once, and every step exactly one StepCompleted."""
    for rid, events in events_by_run.items():
        types = [t for t, _, _ in events]
        assert types.count("RunCompleted") == 1, (rid, events)
        assert "RunFailed" not in types, (rid, events)
        for sid in steps:
            done = [e for e in events if e[0] == "StepCompleted" and e[1] == sid]
            assert len(done) == 1, f"run {rid} step {sid}: {len(done)} StepCompleted; {events}"


def assert_effects_once(receiver: SlowEffectReceiver, markers: dict[uuid.UUID, str], effects_per_run: int) -> None:
    for rid, marker in markers.items():
        keys = receiver.keys_for(marker)
        assert receiver.effects_for(marker) == effects_per_run, (
            f"run {rid}: the receiver applied {len(set(keys))} distinct effects for {effects_per_run} steps; keys {keys}")
        assert all(k.startswith(f"{rid}:") for k in keys), keys


def http_node(sid: str, cluster: Cluster, delay: float = 0.0, **deps: Any) -> dict[str, Any]:
    path = f"/effect?delay={delay}" if delay else "/effect"
    return {"id": sid, "type": "integration", "action": "http.request", **deps,
            "config": {"method": "POST", "url": cluster.receiver.url(path), "body": {"run": "${inputs.n}", "step": sid},
                       "expected_status": [200, 201]},
            "retry": {"max_attempts": 5, "backoff_s": 0.2}}


def shape_node(after: str) -> dict[str, Any]:
    return {"id": "shape", "type": "transform", "input_from": after,
            "config": {"template": {"run": "${inputs.n}", "effect": "${input.body.effect}"}}}


async def create_workflow(c: httpx.AsyncClient, name: str, nodes: list[dict[str, Any]]) -> str:
    resp = await c.post("/api/v2/workflows", json={"name": f"{name}-{uuid.uuid4().hex[:6]}",
                                                   "definition": {"nodes": nodes, "concurrency": "unlimited"}})
    assert resp.status_code == 201, resp.text
    return resp.json()["workflow"]["id"]


@dataclass
class Submitted:
    status: int
    marker: str
    run_id: uuid.UUID | None
    retry_after: str | None
    body: str
    began: float = 0.0
    ended: float = 0.0


async def execute(c: httpx.AsyncClient, workflow_id: str, marker: str, *, key: str | None = None) -> Submitted:
    began = time.monotonic()
    headers = {"Idempotency-Key": key} if key else {}
    resp = await c.post(f"/api/v2/workflows/{workflow_id}/execute", json={"inputs": {"n": marker}}, headers=headers)
    run_id = None
    if resp.status_code == 201:
        run_id = uuid.UUID(resp.json()["run"]["id"])
    elif resp.status_code == 202:  # accepted, not yet committed: the run id derives from the command id
        run_id = entity_id(uuid.UUID(resp.json()["command_id"]))
    return Submitted(resp.status_code, marker, run_id, resp.headers.get("retry-after"), resp.text[:300], began,
                     time.monotonic())


async def wait_dead(proc: ServiceProcess, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.alive():
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} did not die within {timeout}s")
        await asyncio.sleep(0.05)
    return proc.proc.returncode


# --- 1. kill -9 of the executor at each named point -----------------------------------------------------


@pytest.mark.parametrize("point", ["after_step_started", "after_side_effect", "before_ack"])
async def test_executor_killed_at_a_named_point_recovers_with_one_effect(cluster: Cluster, point: str):
    once = cluster.root / f"fault-{point}"
    nodes = [http_node("post", cluster, delay=0.1), shape_node("post")]
    async with cluster.client() as c:
        workflow_id = await create_workflow(c, f"fault-{point}", nodes)
        # Graceful stop (nothing left unacked), then the same executor with the crash point armed.
        await asyncio.to_thread(cluster.stop, "executor")
        await asyncio.to_thread(cluster.start, "executor", {"WEFT_FAULT_POINT": point, "WEFT_FAULT_ONCE_FILE": str(once)})
        marker = f"{point}-{uuid.uuid4().hex[:8]}"
        submitted = await execute(c, workflow_id, marker)
        assert submitted.status in (201, 202), submitted
        code = await wait_dead(cluster.procs["executor"], 30)
        assert code == 137 and once.read_text() == point, f"the executor died otherwise (code {code})"
        await asyncio.to_thread(cluster.start, "executor")  # no fault this time
        run_id = submitted.run_id
        run = await until(lambda: c.get(f"/api/v2/workflows/{workflow_id}/runs/{run_id}"),
                          lambda r: r.status_code == 200 and r.json()["run"]["status"] in ("completed", "failed"),
                          60, what="run terminal through the API")
    assert run.json()["run"]["status"] == "completed", run.text
    events = (await wait_runs_finished(cluster, [run_id], 30))[run_id]
    assert_completed_once({run_id: events}, ("post", "shape"))
    assert_effects_once(cluster.receiver, {run_id: marker}, 1)
    starts = [a for t, s, a in events if t == "StepStarted" and s == "post"]
    keys = cluster.receiver.keys_for(marker)
    if point == "after_step_started":  # died before sending: one request, re-executed under the first key
        assert starts == [1, 2] and keys == [f"{run_id}:post:1"]
    elif point == "after_side_effect":  # the effect happened, unrecorded: resent with the same key, deduped
        assert starts == [1, 2] and keys == [f"{run_id}:post:1"] * 2
    else:  # died after the StartRun commit, before its ack: the redelivery appends nothing. The run's first
        # pass (StepStarted of post) committed with RunCreated, and died before post's task ran: it runs
        # again as attempt 2, under attempt 1's key, and the receiver sees one request.
        assert starts == [1, 2] and keys == [f"{run_id}:post:1"]
        created = await db_fetch(cluster, "SELECT count(*) AS n FROM events WHERE stream_id = $1 AND type = 'RunCreated'",
                                 f"run-{run_id}")
        assert created[0]["n"] == 1


# --- 2. kill -9 at random moments, several runs in flight -----------------------------------------------


async def requests_seen(cluster: Cluster) -> int:
    with cluster.receiver.lock:
        return len(cluster.receiver.requests)


async def test_executor_killed_at_random_moments_loses_and_duplicates_nothing(cluster: Cluster):
    seed = int(os.environ.get("WEFT_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"random kill seed {seed} (WEFT_FAULT_SEED={seed} repeats it)")
    # Three effects apart by durable delays, so work is in flight across all three kills.
    nodes = [http_node("a", cluster, delay=0.4),
             {"id": "d1", "type": "delay", "depends_on": ["a"], "config": {"seconds": 1}},
             http_node("b", cluster, delay=0.4, depends_on=["d1"]),
             {"id": "d2", "type": "delay", "depends_on": ["b"], "config": {"seconds": 1}},
             http_node("c", cluster, delay=0.4, depends_on=["d2"]),
             shape_node("c")]
    kills: list[float] = []
    async with cluster.client() as c:
        workflow_id = await create_workflow(c, "random-kills", nodes)
        submitted = await asyncio.gather(*(execute(c, workflow_id, f"rnd-{i}-{uuid.uuid4().hex[:6]}")
                                           for i in range(10)))
        started = time.monotonic()
        for _ in range(3):
            # A random moment shortly after an effect request arrived: before its answer, after it, or
            # after the result was recorded.
            seen = await requests_seen(cluster)
            await until(lambda: requests_seen(cluster), lambda n: n > seen, 30, every=0.02, what="a request")
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            cluster.kill("executor")
            kills.append(round(time.monotonic() - started, 2))
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await asyncio.to_thread(cluster.start, "executor")
    print(f"kills at {kills} s")
    assert all(s.status in (201, 202) for s in submitted), [s for s in submitted if s.status not in (201, 202)]
    run_ids = [s.run_id for s in submitted]
    events = await wait_runs_finished(cluster, run_ids, 90)
    assert_completed_once(events, ("a", "d1", "b", "d2", "c", "shape"))
    assert_effects_once(cluster.receiver, {s.run_id: s.marker for s in submitted}, 3)
    reexecuted = [(rid, s, a) for rid, evs in events.items() for t, s, a in evs if t == "StepStarted" and a > 1]
    resent = sum(len(cluster.receiver.keys_for(s.marker)) - len(set(cluster.receiver.keys_for(s.marker)))
                 for s in submitted)
    print(f"re-executed steps {len(reexecuted)}, repeated keys answered from the receiver's store {resent}")
    assert reexecuted, "no kill hit a running step; the test proved nothing"


# --- 3 and 4. nats-server and Postgres restarted under load ---------------------------------------------


@asynccontextmanager
async def executing(cluster: Cluster, workflow_id: str, *, prefix: str, keyed: bool, workers: int = 4,
                    pause_s: float = 0.05) -> AsyncIterator[list[Submitted]]:
    """Clients executing continuously until the block ends; yields the list their results are appended to.
    `keyed`: a careful client sends a key per logical request, so a retry can never run it twice."""
    results: list[Submitted] = []
    stop = asyncio.Event()

    async def client_loop(w: int) -> None:
        async with cluster.client() as c:
            i = 0
            while not stop.is_set():
                marker = f"{prefix}-{w}-{i}-{uuid.uuid4().hex[:6]}"
                try:
                    results.append(await execute(c, workflow_id, marker, key=marker if keyed else None))
                except httpx.TransportError as exc:  # the gateway itself never goes away in these tests
                    results.append(Submitted(-1, marker, None, None, repr(exc)))
                i += 1
                await asyncio.sleep(pause_s)

    clients = [asyncio.create_task(client_loop(w)) for w in range(workers)]
    try:
        yield results
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 60)


async def load_through_outage(cluster: Cluster, workflow_id: str, outage, workers: int = 4) -> list[Submitted]:
    """Clients execute continuously; `outage()` runs meanwhile; clients stop a moment after it returns.
    At least one request must have been in flight while the dependency was down."""
    async with executing(cluster, workflow_id, prefix="load", keyed=True, workers=workers) as results:
        await asyncio.sleep(1.0)
        down, up = await outage()
        await asyncio.sleep(2.0)
    overlapping = [r for r in results if r.began < up and r.ended > down]
    print(f"down for {up - down:.1f} s; {len(results)} requests, {len(overlapping)} in flight during the outage")
    assert overlapping, "no request met the outage; the test proved nothing"
    return results


async def runs_created_for(cluster: Cluster, workflow_id: str) -> list[str]:
    """The run streams a workflow's RunCreated events name, sorted (straight from the events table)."""
    rows = await db_fetch(cluster, "SELECT stream_id FROM events WHERE type = 'RunCreated' AND data->>'workflow_id' = $1",
                          workflow_id)
    return sorted(r["stream_id"] for r in rows)


async def check_load_results(cluster: Cluster, results: list[Submitted], workflow_id: str) -> None:
    statuses: dict[int, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    print(f"responses by status: {statuses}")
    assert set(statuses) <= {201, 202, 503}, [r for r in results if r.status not in (201, 202, 503)][:5]
    assert all(r.retry_after for r in results if r.status == 503), [r for r in results if r.status == 503][:3]
    assert [r for r in results if r.status in (201, 202)], "nothing was accepted"
    # 503 means "not acknowledged, retry". When nats-server stored a command and died before its PubAck,
    # the gateway cannot know, and that command still runs; a retry with the same Idempotency-Key then
    # names the same command and run, never a second one. So: retry every 503 as a client would.
    async with cluster.client() as c:
        retried = [await execute(c, workflow_id, r.marker, key=r.marker) for r in results if r.status == 503]
    assert all(r.status in (201, 202) for r in retried), [r for r in retried if r.status not in (201, 202)][:3]
    accepted = [r for r in results if r.status in (201, 202)] + retried
    events = await wait_runs_finished(cluster, [r.run_id for r in accepted], 120)
    assert_completed_once(events, ("post", "shape"))
    assert_effects_once(cluster.receiver, {r.run_id: r.marker for r in accepted}, 1)
    created = await runs_created_for(cluster, workflow_id)
    # Every logical request ran exactly once: nothing accepted was lost, nothing ran twice.
    assert len({r.marker for r in accepted}) == len(accepted)
    assert created == sorted(f"run-{r.run_id}" for r in accepted), (
        f"{len(created)} runs created for {len(accepted)} logical requests")


async def test_nats_server_restart_under_load_loses_nothing_accepted(cluster: Cluster):
    async with cluster.client() as c:
        workflow_id = await create_workflow(c, "nats-restart", [http_node("post", cluster), shape_node("post")])

    async def outage() -> tuple[float, float]:
        await asyncio.to_thread(cluster.nats.stop, signal.SIGKILL)
        down = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(cluster.nats.start)  # same port, same data dir
        return down, time.monotonic()

    results = await load_through_outage(cluster, workflow_id, outage)
    await check_load_results(cluster, results, workflow_id)


async def test_postgres_restart_under_load_answers_503_and_loses_nothing_accepted(cluster: Cluster):
    async with cluster.client() as c:
        workflow_id = await create_workflow(c, "pg-restart", [http_node("post", cluster), shape_node("post")])

    async def outage() -> tuple[float, float]:
        down = time.monotonic()
        await asyncio.to_thread(cluster.pg.stop, signal.SIGINT)  # fast shutdown
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(cluster.pg.start)
        return down, time.monotonic()

    results = await load_through_outage(cluster, workflow_id, outage)
    assert any(r.status == 503 for r in results), "no request saw Postgres down"
    await check_load_results(cluster, results, workflow_id)


async def test_a_command_in_flight_when_postgres_goes_away_is_not_lost(cluster: Cluster):
    """An execute accepted (202) while the executor is stalled; Postgres goes down before the executor gets
    to it and stays down longer than the redeliveries last. The outage is not the command's fault: once
    Postgres is back the run is created and completes (not rejected as poison, not dropped)."""
    async with cluster.client() as c:
        workflow_id = await create_workflow(c, "pg-in-flight", [http_node("post", cluster), shape_node("post")])
        executor = cluster.procs["executor"]
        executor.proc.send_signal(signal.SIGSTOP)
        try:
            submitted = await execute(c, workflow_id, f"inflight-{uuid.uuid4().hex[:8]}")
            assert submitted.status == 202, submitted  # published (PubAck), not answered in time
            await asyncio.to_thread(cluster.pg.stop, signal.SIGINT)
        finally:
            executor.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(max(OUTAGE_S, 8.0))  # longer than the NAK redeliveries (0.2 s doubling, 5 deliveries)
        await asyncio.to_thread(cluster.pg.start)
    events = await wait_runs_finished(cluster, [submitted.run_id], 60)
    assert_completed_once(events, ("post", "shape"))
    assert_effects_once(cluster.receiver, {submitted.run_id: submitted.marker}, 1)
