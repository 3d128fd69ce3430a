"""Exactly one run per occurrence with two scheduler processes against one Postgres and one nats-server, and
across kill -9 of a scheduler mid-firing; timers that outlive every scheduler process.

The module runs its own nats-server and database (on the session's Postgres) and its own relay, executor and
two schedulers, so killing them disturbs no other test. Schedules are created "in the past" (their cursor
minutes behind), which is exactly what a scheduler outage leaves: their occurrences are due at once.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import pytest

from deploy.local.stack import ServiceProcess, service_env, wait_http
from libs.domain import cron
from deploy.local.embedded import EmbeddedNats, free_port
from libs.readmodels import project
from libs.domain.schedule_state import decode
from libs.events.schemas import Metadata
from libs.events.schemas.workflow import WorkflowCreated
from libs.events.store import EventStore
from services.scheduler.domain import run_id_for
from tests.conftest import migrated_database, poll
from tests.fault_load import backdated_schedules

MODULES = {"relay": "services.relay", "executor": "services.executor", "scheduler-a": "services.scheduler",
           "scheduler-b": "services.scheduler"}


@dataclass
class Cluster:
    root: Path
    dsn: str
    nats: EmbeddedNats
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, ServiceProcess] = field(default_factory=dict)

    def start(self, name: str, *, wait: bool = True, **env: str) -> ServiceProcess:
        old = self.procs.get(name)
        assert old is None or not old.alive(), f"{name} is still running"
        base = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")} | {"WEFT_RELAY_POLL_S": "0.2"} | env
        self.ports.setdefault(name, free_port())
        service = name.split("-")[0]
        proc = ServiceProcess(name, MODULES[name], service_env(base, name=service, port=self.ports[name],
                                                                database_url=self.dsn, nats_url=self.nats.url),
                              self.root / "logs")
        proc.start()
        self.procs[name] = proc
        if wait:
            wait_http(self.ports[name], timeout=60)
        return proc

    def log(self, name: str) -> str:
        return (self.root / "logs" / f"{name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def cluster(infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("sched-replicas")
    dsn = asyncio.run(migrated_database(infra, "weft_replicas"))
    nats = EmbeddedNats(root / "nats", free_port())
    nats.start()
    c = Cluster(root, dsn, nats)
    try:
        for proc in MODULES:  # all at once, then wait for each
            c.start(proc, wait=False)
        for proc in MODULES:
            wait_http(c.ports[proc], timeout=60)
        yield c
    finally:
        for proc in c.procs.values():
            proc.kill()  # nothing to drain: the database and nats-server go with the module
        nats.stop()


@pytest.fixture(scope="module")
async def store(cluster: Cluster):
    pool = await asyncpg.create_pool(cluster.dsn, min_size=1, max_size=10)
    yield EventStore(pool, projector=project)
    await pool.close()


async def _workflow(store: EventStore, tenant: str, nodes=None) -> uuid.UUID:
    wid = uuid.uuid4()
    definition = {"nodes": nodes or [{"id": "s", "type": "echo", "config": {"message": "hi"}}], "concurrency": "unlimited"}
    await store.append(f"workflow-{wid}", 0, [WorkflowCreated(workflow_id=wid, name=f"wf-{wid.hex[:8]}",
                                                              definition=definition, created_by="alice",
                                                              at=datetime.now(UTC))],
                       metadata=Metadata(tenant_id=tenant))
    return wid


class Ledger(dict):
    def __repr__(self) -> str:  # what a failed poll prints: counts, not every run id
        fired = sum(len(f) for f in self["fired"].values())
        return (f"Ledger(schedules={len(self['schedules'])}, fired={fired}, runs created={len(self['created'])},"
                f" completed={len(self['completed'])})")


async def _ledger(store: EventStore) -> Ledger:
    """Every schedule in the database, straight from the events table in one snapshot: its fired occurrences
    (with run ids), and per run id how many RunCreated and RunCompleted events exist."""
    async with store.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        fired = await conn.fetch("SELECT stream_id, data->>'occurrence_at' AS at, data->>'run_id' AS run_id"
                                 " FROM events WHERE type = 'OccurrenceFired'")
        runs = await conn.fetch("SELECT substr(stream_id, 5) AS run_id, type FROM events"
                                " WHERE type IN ('RunCreated', 'RunCompleted')")
        states = await conn.fetch("SELECT id, state::text AS state FROM schedules")
    created, completed = {}, {}
    for r in runs:
        bucket = created if r["type"] == "RunCreated" else completed
        bucket[r["run_id"]] = bucket.get(r["run_id"], 0) + 1
    schedules = {r["id"]: decode(r["state"]) for r in states}
    by_schedule: dict[uuid.UUID, list[tuple[datetime, str]]] = {s: [] for s in schedules}
    for f in fired:
        by_schedule[uuid.UUID(f["stream_id"].split("-", 1)[1])].append(
            (datetime.fromisoformat(f["at"].replace("Z", "+00:00")), f["run_id"]))
    return Ledger(fired=by_schedule, created=created, completed=completed, schedules=schedules)


def _all_done(ledger: dict, sids: list[uuid.UUID], minimum: int) -> bool:
    """These schedules fired at least `minimum` runs each, and every fired run of every schedule completed."""
    fired = ledger["fired"]
    return all(len(fired.get(s, ())) >= minimum for s in sids) and all(
        ledger["completed"].get(run_id) for f in fired.values() for _, run_id in f)


def assert_exactly_once(ledger: dict) -> None:
    """Every schedule in the database: no occurrence fired twice, none missed, one run per fired occurrence."""
    every = cron.parse("* * * * *")
    for sid, state in ledger["schedules"].items():
        fired = ledger["fired"][sid]
        occurrences = [at for at, _ in fired]
        assert len(occurrences) == len(set(occurrences)), f"schedule {sid} fired an occurrence twice: {sorted(occurrences)}"
        # Nothing missed: every occurrence up to the cursor fired (queue of 10 > the minutes behind).
        expected = cron.occurrences(every, cron.zone("UTC"), state.created_at, state.cursor)
        assert sorted(occurrences) == expected, (sid, sorted(occurrences), expected)
        for at, run_id in fired:
            assert run_id == str(run_id_for(sid, at))
            assert ledger["created"].get(run_id) == 1 and ledger["completed"].get(run_id) == 1, (sid, at, run_id)
    fired_runs = {run_id for f in ledger["fired"].values() for _, run_id in f}
    assert set(ledger["created"]) == fired_runs, "a run no occurrence accounts for"


async def test_two_scheduler_replicas_fire_each_occurrence_exactly_once(cluster, store, tenant):
    wid = await _workflow(store, tenant)
    created_at = datetime.now(UTC) - timedelta(minutes=2, seconds=30)
    sids = await backdated_schedules(store, tenant, wid, 16, created_at)
    ledger = await poll(lambda: _ledger(store), lambda led: _all_done(led, sids, 2), timeout=60, every=0.3)
    assert_exactly_once(ledger)
    leaders = [n for n in ("scheduler-a", "scheduler-b") if "scheduler_leading" in cluster.log(n)]
    assert len(leaders) >= 1 and all(cluster.procs[n].alive() for n in ("scheduler-a", "scheduler-b"))


def _kill(cluster: Cluster, *names: str) -> None:
    for name in names:
        cluster.procs[name].kill()


async def _died(proc: ServiceProcess) -> None:
    await poll(lambda: asyncio.sleep(0, proc.alive()), lambda alive: not alive, timeout=30)


async def test_schedulers_killed_mid_firing_lose_and_duplicate_nothing(cluster, store, tenant, tmp_path):
    """Two crashes in a row, each os._exit (what kill -9 leaves) the first time a scheduler reaches a named
    point: replica A right after its decision commits, before the timer loop publishes the StartRuns
    (schedule_fired); then replica B, taking over, after committing the StartRuns to the command log and marking
    their timers fired, before publishing them (timer_logged): the relay publishes them. A restarted A finishes
    the job: every occurrence fired once, one run each."""
    _kill(cluster, "scheduler-a", "scheduler-b")
    first, second = tmp_path / "fault-a", tmp_path / "fault-b"
    # (A doomed process is not waited for: it may reach its point before it reports ready.)
    doomed = cluster.start("scheduler-a", wait=False, WEFT_FAULT_POINT="schedule_fired", WEFT_FAULT_ONCE_FILE=str(first))
    wid = await _workflow(store, tenant)
    created_at = datetime.now(UTC) - timedelta(minutes=2, seconds=30)
    sids = await backdated_schedules(store, tenant, wid, 10, created_at)
    await _died(doomed)
    assert first.read_text() == "schedule_fired" and doomed.proc.returncode == 137
    async with store.pool.acquire() as conn:  # (the decision may be for an earlier test's schedule)
        unpublished = await conn.fetchval("SELECT count(*) FROM timers WHERE status = 'pending'")
    assert unpublished > 0, "A should have committed a decision (with its StartRun timers) before dying"
    taker = cluster.start("scheduler-b", wait=False, WEFT_FAULT_POINT="timer_logged",
                          WEFT_FAULT_ONCE_FILE=str(second))
    await _died(taker)
    assert second.read_text() == "timer_logged" and taker.proc.returncode == 137
    cluster.start("scheduler-a")
    ledger = await poll(lambda: _ledger(store), lambda led: _all_done(led, sids, 2), timeout=60, every=0.3)
    assert_exactly_once(ledger)
    async with store.pool.acquire() as conn:
        timers = await conn.fetch("SELECT status, count(*) AS n FROM timers WHERE tenant_id = $1 GROUP BY status",
                                  tenant)
        rejected = await conn.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1 AND type = 'CommandRejected'",
                                       tenant)
    assert {t["status"]: t["n"] for t in timers} == {"fired": sum(len(ledger["fired"][s]) for s in sids)}
    assert rejected == 0


async def test_a_delay_outlives_every_scheduler_process(cluster, store, tenant):
    """kill -9 both schedulers while a run waits on its delay; the timer is in Postgres, so the scheduler
    started after the due time fires it once and the run completes."""
    nodes = [{"id": "wait", "type": "delay", "config": {"seconds": 1.5}}, {"id": "after", "type": "echo",
                                                                          "input_from": "wait"}]
    wid = await _workflow(store, tenant, nodes)
    # Start the run the way the gateway does: a StartRun command to the executor.
    import nats

    from libs.events.bus import CommandBus
    from libs.events.schemas import CommandEnvelope
    from libs.events.schemas.run import StartRun

    run_id, command_id = uuid.uuid4(), uuid.uuid4()
    nc = await nats.connect(cluster.nats.url)
    try:
        outcome = await CommandBus(nc, nc.jetstream(), 10).send("executor", CommandEnvelope(
            command_id=command_id, tenant_id=tenant, actor="alice", correlation_id=str(command_id),
            command=StartRun(run_id=run_id, workflow_id=wid, workflow_version=1, definition={"nodes": nodes},
                             inputs={}, created_by="alice", at=datetime.now(UTC)), issued_at=datetime.now(UTC)))
    finally:
        await nc.drain()
    assert outcome is not None and outcome.status == 201

    async def run_events() -> list[tuple[str, str | None]]:
        async with store.pool.acquire() as conn:
            rows = await conn.fetch("SELECT type, data::text AS data FROM events WHERE stream_id = $1 ORDER BY version",
                                    f"run-{run_id}")
        return [(r["type"], msgspec.json.decode(r["data"]).get("step_id")) for r in rows]

    await poll(run_events, lambda evs: ("StepWaiting", "wait") in evs, timeout=20)
    _kill(cluster, "scheduler-a", "scheduler-b")
    await asyncio.sleep(2.0)  # the delay ends while no scheduler runs
    assert ("StepCompleted", "wait") not in await run_events()
    cluster.start("scheduler-b")
    events = await poll(run_events, lambda evs: evs[-1][0] in ("RunCompleted", "RunFailed"), timeout=30)
    assert events[-1][0] == "RunCompleted" and events.count(("StepCompleted", "wait")) == 1
