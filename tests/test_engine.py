"""The engine against the real event store (in-process, on a database no service process watches):
parallel branches, skips, retries, timeouts, delays, cancel and terminate, crash recovery, and the
one-active-run rule."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from libs.events.aggregate import fold
from libs.events.schemas import CommandEnvelope, Metadata
from libs.events.schemas.run import CancelRun, StartRun, StepStarted, TerminateRun
from services.executor import domain, integrations  # noqa: F401 - registers the integration steps (condition)
from services.executor.engine import Engine
from services.executor.handlers import handle_run_command
from services.executor.leases import RunLeases
from services.executor.steps import StepError, step
from tests.conftest import poll

CALLS: dict[str, int] = {}


@step("test.sleep")
async def _sleep(node, context, call, deps):
    await asyncio.sleep(node["config"]["seconds"])
    return {"slept": node["config"]["seconds"], "at": time.monotonic()}


@step("test.flaky")
async def _flaky(node, context, call, deps):
    key = f"{call.run_id}:{node['id']}"
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] <= node["config"]["failures"]:
        raise StepError(f"transient failure {CALLS[key]}", retryable=node["config"].get("retryable", True))
    return {"attempt": call.attempt, "key": call.idempotency_key}


def _env(tenant: str, command) -> CommandEnvelope:
    cid = uuid.uuid4()
    return CommandEnvelope(command_id=cid, tenant_id=tenant, actor="alice", correlation_id=str(cid), command=command,
                           issued_at=datetime.now(UTC))


async def _start(store, tenant: str, nodes: list[dict], workflow_id: uuid.UUID | None = None, **definition):
    run_id = uuid.uuid4()
    outcome = await handle_run_command(store, _env(tenant, StartRun(
        run_id=run_id, workflow_id=workflow_id or uuid.uuid4(), workflow_version=1,
        definition={"nodes": nodes, **definition}, inputs={"n": 2}, created_by="alice", at=datetime.now(UTC))))
    return run_id, outcome


async def _types(store, tenant: str, run_id) -> list[tuple[str, str | None]]:
    recorded = await store.read_stream(tenant, f"run-{run_id}")
    return [(r.type, msgspec.json.decode(r.data).get("step_id")) for r in recorded]


async def _state(store, tenant, run_id) -> domain.Run:
    return fold(domain.initial, domain.evolve, await store.read_stream(tenant, f"run-{run_id}"))


@pytest.fixture
def store(isolated_store):
    return isolated_store


@pytest.fixture
def engine(store):
    eng = Engine(store, rng=random.Random(7))
    yield eng


async def test_independent_branches_run_concurrently(engine, store, tenant):
    nodes = [{"id": "a", "type": "test.sleep", "config": {"seconds": 0.6}},
             {"id": "b", "type": "test.sleep", "config": {"seconds": 0.6}},
             {"id": "c", "type": "echo", "depends_on": ["a", "b"], "config": {"message": "${a.slept}"}}]
    run_id, _ = await _start(store, tenant, nodes)
    started = time.monotonic()
    assert await engine.advance(tenant, run_id) == "completed"
    assert time.monotonic() - started < 1.1  # a and b overlapped
    types = await _types(store, tenant, run_id)
    starts = [i for i, (t, s) in enumerate(types) if t == "StepStarted" and s in ("a", "b")]
    first_done = min(i for i, (t, s) in enumerate(types) if t == "StepCompleted")
    assert len(starts) == 2 and max(starts) < first_done
    assert (await _state(store, tenant, run_id)).steps["c"].output == 0.6


async def test_false_condition_skips_its_branch(engine, store, tenant):
    nodes = [{"id": "check", "type": "condition", "config": {}},
             {"id": "then", "type": "echo", "input_from": "check", "config": {"message": "ran"}},
             {"id": "after", "type": "echo", "input_from": "then"},
             {"id": "other", "type": "echo", "config": {"message": "independent"}}]
    from services.executor import steps as registry

    async def fake_condition(node, context, call, deps):
        return {"passed": False}

    original = registry.REGISTRY.get("condition")
    registry.REGISTRY["condition"] = fake_condition
    try:
        run_id, _ = await _start(store, tenant, nodes)
        assert await engine.advance(tenant, run_id) == "completed"
    finally:
        if original is not None:
            registry.REGISTRY["condition"] = original
    run = await _state(store, tenant, run_id)
    assert {sid: s.status for sid, s in run.steps.items()} == {
        "check": "completed", "then": "skipped", "after": "skipped", "other": "completed"}
    assert "condition check was false" in run.steps["then"].error


async def test_retryable_errors_retry_with_backoff_and_attempts_recorded(engine, store, tenant):
    nodes = [{"id": "f", "type": "test.flaky", "config": {"failures": 2},
              "retry": {"max_attempts": 3, "backoff_s": 0.05, "jitter": 0.1}}]
    run_id, _ = await _start(store, tenant, nodes)
    assert await engine.advance(tenant, run_id) == "completed"
    types = [t for t, s in await _types(store, tenant, run_id) if s == "f"]
    assert types == ["StepStarted", "StepRetryScheduled", "StepStarted", "StepRetryScheduled", "StepStarted",
                     "StepCompleted"]
    run = await _state(store, tenant, run_id)
    assert run.steps["f"].attempt == 3 and run.steps["f"].output["key"] == f"{run_id}:f:3"


async def test_exhausted_or_permanent_errors_fail_the_run(engine, store, tenant):
    nodes = [{"id": "f", "type": "test.flaky", "config": {"failures": 9}, "retry": {"max_attempts": 2, "backoff_s": 0.01}}]
    run_id, _ = await _start(store, tenant, nodes)
    assert await engine.advance(tenant, run_id) == "failed"
    nodes = [{"id": "p", "type": "test.flaky", "config": {"failures": 1, "retryable": False}}]
    run_id, _ = await _start(store, tenant, nodes)
    assert await engine.advance(tenant, run_id) == "failed"
    assert [t for t, _ in await _types(store, tenant, run_id)][-2:] == ["StepFailed", "RunFailed"]


async def test_on_error_continue_skips_dependents_and_completes(engine, store, tenant):
    nodes = [{"id": "p", "type": "test.flaky", "on_error": "continue", "config": {"failures": 1, "retryable": False}},
             {"id": "q", "type": "echo", "input_from": "p"},
             {"id": "r", "type": "echo", "config": {"message": "fine"}}]
    run_id, _ = await _start(store, tenant, nodes)
    assert await engine.advance(tenant, run_id) == "completed"
    run = await _state(store, tenant, run_id)
    assert (run.steps["p"].status, run.steps["q"].status, run.steps["r"].status) == ("failed", "skipped", "completed")


async def test_step_and_run_timeouts(engine, store, tenant):
    nodes = [{"id": "s", "type": "test.sleep", "timeout_s": 0.1, "retry": {"max_attempts": 1}, "config": {"seconds": 5}}]
    run_id, _ = await _start(store, tenant, nodes)
    assert await engine.advance(tenant, run_id) == "failed"
    assert "timed out after 0.1 s" in (await _state(store, tenant, run_id)).steps["s"].error
    nodes = [{"id": "s", "type": "test.sleep", "config": {"seconds": 5}}]
    run_id, _ = await _start(store, tenant, nodes, timeout_s=0.3)
    started = time.monotonic()
    assert await engine.advance(tenant, run_id) == "failed"
    assert time.monotonic() - started < 2


async def test_delay_is_a_durable_timer(engine, store, tenant):
    nodes = [{"id": "d", "type": "delay", "config": {"seconds": 0.5}}, {"id": "e", "type": "echo", "input_from": "d"}]
    run_id, _ = await _start(store, tenant, nodes)
    driver = engine.poke(tenant, run_id)
    await poll(lambda: _types(store, tenant, run_id), lambda ts: ("StepWaiting", "d") in ts)
    # The process "dies" while waiting. The wait's end is a durable timer committed with StepWaiting, which
    # the scheduler fires (tests/test_scheduler_timers.py); no driver sleeps for it, so here a new engine has
    # nothing to do until the timer's command is delivered, by hand.
    driver.task.cancel()
    await asyncio.gather(driver.task, return_exceptions=True)
    fresh = Engine(store)
    assert await fresh.advance(tenant, run_id) == "running"
    from libs.events.schemas.run import RunCommand

    async with store.tenant_transaction(tenant) as conn:
        raw = await conn.fetchval("SELECT envelope::text FROM timers WHERE tenant_id = $1 AND status = 'pending'",
                                  tenant)
    timer_command = msgspec.json.decode(raw, type=CommandEnvelope[RunCommand])
    await handle_run_command(store, timer_command, engine=fresh)
    assert await fresh.advance(tenant, run_id) == "completed"
    assert [t for t, s in await _types(store, tenant, run_id) if s == "d"] == ["StepStarted", "StepWaiting",
                                                                             "StepCompleted"]


async def test_cancel_lets_the_running_step_finish_and_starts_nothing_new(engine, store, tenant):
    nodes = [{"id": "s", "type": "test.sleep", "config": {"seconds": 0.8}}, {"id": "next", "type": "echo", "input_from": "s"}]
    run_id, _ = await _start(store, tenant, nodes)
    engine.poke(tenant, run_id)
    await poll(lambda: _types(store, tenant, run_id), lambda ts: ("StepStarted", "s") in ts)
    outcome = await handle_run_command(store, _env(tenant, CancelRun(run_id=run_id, requested_by="alice",
                                                                      at=datetime.now(UTC))))
    assert outcome.status == 200
    assert await engine.advance(tenant, run_id) == "cancelled"
    types = await _types(store, tenant, run_id)
    assert ("StepCompleted", "s") in types and ("StepStarted", "next") not in types
    assert types[-1][0] == "RunCancelled"
    again = await handle_run_command(store, _env(tenant, CancelRun(run_id=run_id, requested_by="alice",
                                                                    at=datetime.now(UTC))))
    assert again.status == 400 and "already cancelled" in again.error


async def test_terminate_stops_now(engine, store, tenant):
    nodes = [{"id": "s", "type": "test.sleep", "config": {"seconds": 5}}]
    run_id, _ = await _start(store, tenant, nodes)
    driver = engine.poke(tenant, run_id)
    await poll(lambda: _types(store, tenant, run_id), lambda ts: ("StepStarted", "s") in ts)
    await handle_run_command(store, _env(tenant, TerminateRun(run_id=run_id, requested_by="alice", at=datetime.now(UTC))))
    engine.poke(tenant, run_id)
    started = time.monotonic()
    await asyncio.wait_for(asyncio.shield(driver.task), 3)
    assert time.monotonic() - started < 1
    assert [t for t, _ in await _types(store, tenant, run_id)][-1] == "RunTerminated"
    assert (await _state(store, tenant, run_id)).status == "cancelled"


async def test_a_step_started_by_a_dead_process_runs_again_as_a_new_attempt(engine, store, tenant):
    nodes = [{"id": "f", "type": "test.flaky", "config": {"failures": 0}}]
    run_id, _ = await _start(store, tenant, nodes)
    recorded = await store.read_stream(tenant, f"run-{run_id}")
    from libs.events.schemas.run import RunStarted

    now = datetime.now(UTC)
    await store.append(f"run-{run_id}", len(recorded), [RunStarted(run_id=run_id, at=now),
                                                         StepStarted(run_id=run_id, step_id="f", attempt=1, at=now)],
                       metadata=Metadata(tenant_id=tenant))
    assert await engine.advance(tenant, run_id) == "completed"
    run = await _state(store, tenant, run_id)
    # A new attempt, but the crashed attempt recorded no result (its effect may have happened): same key.
    assert run.steps["f"].attempt == 2 and run.steps["f"].output["key"].endswith(":f:1")


async def test_one_active_run_per_workflow_unless_unlimited(engine, store, tenant):
    workflow_id = uuid.uuid4()
    nodes = [{"id": "s", "type": "test.sleep", "config": {"seconds": 0.3}}]
    first, ok = await _start(store, tenant, nodes, workflow_id)
    _, refused = await _start(store, tenant, nodes, workflow_id)
    assert ok.status == 201 and refused.status == 409 and "already active" in refused.error
    assert await engine.advance(tenant, first) == "completed"
    _, after = await _start(store, tenant, nodes, workflow_id)
    assert after.status == 201
    other = uuid.uuid4()
    outcomes = [(await _start(store, tenant, nodes, other, concurrency="unlimited"))[1] for _ in range(3)]
    assert [o.status for o in outcomes] == [201, 201, 201]


async def _start_driven(engine, store, tenant, nodes, workflow_id=None, **definition):
    """StartRun through the handler with the engine: its first pass commits with RunCreated."""
    run_id = uuid.uuid4()
    outcome = await handle_run_command(store, _env(tenant, StartRun(
        run_id=run_id, workflow_id=workflow_id or uuid.uuid4(), workflow_version=1,
        definition={"nodes": nodes, **definition}, inputs={"n": 2}, created_by="alice", at=datetime.now(UTC))),
        engine=engine)
    return run_id, outcome


async def _driven_to_rest(engine, store, tenant, nodes) -> uuid.UUID:
    """_start_driven, then wait for the run's driver to finish."""
    run_id, outcome = await _start_driven(engine, store, tenant, nodes)
    assert outcome.status == 201
    await asyncio.wait_for(asyncio.shield(engine.drivers[(tenant, run_id)].task), 5)
    return run_id


async def test_a_run_over_in_its_first_pass_is_still_refused_while_another_is_active(engine, store, tenant):
    # A pure run is over in the StartRun's own append, and its runs row is then written once, already
    # completed. An exclusive one must still meet the one-active-run index.
    workflow_id = uuid.uuid4()
    sleeper, ok = await _start_driven(engine, store, tenant, [{"id": "s", "type": "test.sleep", "config": {"seconds": 0.5}}],
                                      workflow_id)
    refused_id, refused = await _start_driven(engine, store, tenant, [{"id": "a", "type": "echo"}], workflow_id)
    assert ok.status == 201 and refused.status == 409 and "already active" in refused.error
    assert await store.read_stream(tenant, f"run-{refused_id}") == []
    await asyncio.wait_for(asyncio.shield(engine.drivers[(tenant, sleeper)].task), 5)
    _, after = await _start_driven(engine, store, tenant, [{"id": "a", "type": "echo"}], workflow_id)
    assert after.status == 201


@pytest.mark.parametrize("definition", [{"concurrency": "unlimited"}, {}], ids=["unlimited", "exclusive"])
async def test_a_runs_row_written_in_one_statement_equals_the_row_written_event_by_event(engine, store, tenant,
                                                                                         definition):
    # The runs projection merges a batch's changes (and inserts a run created in the batch with them). The
    # row must be exactly what projecting the same events one at a time gives.
    from libs.readmodels import runs as runs_projection

    nodes = [{"id": "a", "type": "transform", "config": {"template": {"n": "${inputs.n}"}}},
             {"id": "b", "type": "echo", "input_from": "a"},
             {"id": "c", "type": "condition", "depends_on": ["a"],
              "config": {"field": "$.a.n", "operator": "equals", "value": 3}},
             {"id": "d", "type": "echo", "depends_on": ["c"]}]
    run_id, outcome = await _start_driven(engine, store, tenant, nodes, **definition)
    assert outcome.status == 201
    recorded = await store.read_stream(tenant, f"run-{run_id}")
    assert recorded[-1].type == "RunCompleted"
    query = "SELECT to_jsonb(runs) - 'run_number' FROM runs WHERE id = $1"
    async with store.pool.acquire() as conn:
        merged = json.loads(await conn.fetchval(query, run_id))
        replay = conn.transaction()
        await replay.start()
        await conn.execute("DELETE FROM runs WHERE id = $1", run_id)
        for rec in recorded:
            await runs_projection.project(conn, [rec])
        one_by_one = json.loads(await conn.fetchval(query, run_id))
        await replay.rollback()
    assert merged == one_by_one
    assert merged["status"] == "completed" and merged["finished_at"] and merged["stream_version"] == len(recorded)
    assert merged["steps"]["d"]["status"] == "skipped" and merged["steps"]["b"]["output"] == {"n": 2}


async def _transactions(store, run_id) -> list[list[str]]:
    """The run's events grouped by the transaction that wrote them (xmin), in log order."""
    rows = await store.pool.fetch(
        "SELECT xmin::text AS tx, type, data->>'step_id' AS step FROM events WHERE stream_id = $1 ORDER BY version",
        f"run-{run_id}")
    groups: list[list[str]] = []
    last = None
    for row in rows:
        if row["tx"] != last:
            groups.append([])
            last = row["tx"]
        groups[-1].append(row["type"] + (f"({row['step']})" if row["step"] else ""))
    return groups


async def test_pure_steps_run_inline_and_commit_with_what_they_unblock(engine, store, tenant):
    # transform -> condition -> echo are pure (steps.PURE): no commit point of their own. The side-effecting
    # step d gets its StepStarted committed before it runs, and its result commits with the pure step after it.
    nodes = [{"id": "a", "type": "transform", "config": {"template": {"n": "${inputs.n}"}}},
             {"id": "b", "type": "condition", "input_from": "a", "config": {"field": "$.n", "operator": "gt", "value": 1}},
             {"id": "c", "type": "echo", "depends_on": ["b"], "config": {"message": "n is ${a.n}"}},
             {"id": "d", "type": "test.flaky", "depends_on": ["c"], "config": {"failures": 0}},
             {"id": "e", "type": "transform", "depends_on": ["d"], "config": {"template": {"said": "${c}"}}}]
    run_id, _ = await _start(store, tenant, nodes)
    assert await engine.advance(tenant, run_id) == "completed"
    assert await _transactions(store, run_id) == [
        ["RunCreated"],
        ["RunStarted", "StepStarted(a)", "StepCompleted(a)", "StepStarted(b)", "StepCompleted(b)",
         "StepStarted(c)", "StepCompleted(c)", "StepStarted(d)"],
        ["StepCompleted(d)", "StepStarted(e)", "StepCompleted(e)", "RunCompleted"],
    ]
    run = await _state(store, tenant, run_id)
    assert run.steps["b"].output["passed"] is True and run.steps["e"].output == {"said": "n is 2"}
    # The read model saw every step of the merged batches.
    row = await store.pool.fetchrow("SELECT status, steps::text AS steps FROM runs WHERE id = $1", run_id)
    steps = msgspec.json.decode(row["steps"])
    assert row["status"] == "completed" and {s: v["status"] for s, v in steps.items()} == dict.fromkeys("abcde", "completed")
    assert steps["a"]["started_at"] and steps["a"]["finished_at"] and steps["c"]["output"] == "n is 2"


async def test_a_pure_step_failing_fails_the_run_in_the_same_commit(engine, store, tenant):
    nodes = [{"id": "a", "type": "transform", "config": {"template": "${inputs.missing}"}},
             {"id": "b", "type": "echo", "depends_on": ["a"]}]
    run_id, _ = await _start(store, tenant, nodes)
    assert await engine.advance(tenant, run_id) == "failed"
    assert await _transactions(store, run_id) == [["RunCreated"], ["RunStarted", "StepStarted(a)", "StepFailed(a)", "RunFailed"]]
    assert "inputs.missing" in (await _state(store, tenant, run_id)).steps["a"].error


async def test_two_drivers_racing_on_one_run_complete_each_step_once(store, tenant):
    # Two executors (an old one not yet dead, a new one recovering) drive the same run at once: the
    # expected-version check lets one pass commit; the other re-reads and finds the run over.
    nodes = [{"id": f"s{i}", "type": "transform", **({"depends_on": [f"s{i - 1}"]} if i else {}),
              "config": {"template": {"i": i}}} for i in range(6)]
    runs = [(await _start(store, tenant, nodes))[0] for _ in range(10)]
    first, second = Engine(store, rng=random.Random(1)), Engine(store, rng=random.Random(2))
    statuses = await asyncio.gather(*(e.advance(tenant, r) for r in runs for e in (first, second)))
    assert set(statuses) == {"completed"}
    for run_id in runs:
        types = await _types(store, tenant, run_id)
        completed = [s for t, s in types if t == "StepCompleted"]
        assert sorted(completed) == [f"s{i}" for i in range(6)], types
        assert [t for t, _ in types].count("RunCompleted") == 1 and [t for t, _ in types].count("RunStarted") == 1


async def test_a_new_runs_first_pass_commits_with_run_created_and_its_steps_start_once(engine, store, tenant):
    # Through the executor's handler: RunCreated, RunStarted, the pure chain and the StepStarted of the first
    # side-effecting step are one append; that step then runs as attempt 1 (not taken for a crashed one).
    nodes = [{"id": "a", "type": "transform", "config": {"template": {"n": "${inputs.n}"}}},
             {"id": "d", "type": "test.flaky", "depends_on": ["a"], "config": {"failures": 0}},
             {"id": "e", "type": "echo", "depends_on": ["d"]}]
    run_id = await _driven_to_rest(engine, store, tenant, nodes)
    assert await _transactions(store, run_id) == [
        ["RunCreated", "RunStarted", "StepStarted(a)", "StepCompleted(a)", "StepStarted(d)"],
        ["StepCompleted(d)", "StepStarted(e)", "StepCompleted(e)", "RunCompleted"],
    ]
    run = await _state(store, tenant, run_id)
    assert run.status == "completed" and run.steps["d"].attempt == 1 and run.steps["d"].output["key"].endswith(":d:1")


@step("test.nul")
async def _nul(node, context, call, deps):
    return {"body": "binary\u0000junk"}


async def test_an_output_postgres_cannot_store_fails_the_step_and_the_run_finishes(engine, store, tenant):
    # Appending it would fail on every try and leave the run unfinished; the decider fails the step instead.
    nodes = [{"id": "n", "type": "test.nul", "retry": {"max_attempts": 3}}, {"id": "after", "type": "echo", "input_from": "n"}]
    run_id, _ = await _start(store, tenant, nodes)
    assert await engine.advance(tenant, run_id) == "failed"
    run = await _state(store, tenant, run_id)
    assert run.steps["n"].attempt == 1 and "output.body contains a NUL character" in run.steps["n"].error


class CountingLeases(RunLeases):
    """The real leases (Postgres), counting what the drivers ask of them."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.acquired: list[uuid.UUID] = []
        self.released: list[uuid.UUID] = []

    async def acquire(self, tenant_id, run_id):
        self.acquired.append(run_id)
        return await super().acquire(tenant_id, run_id)

    async def release(self, run_id):
        self.released.append(run_id)
        await super().release(run_id)


async def test_a_run_ended_by_its_first_pass_takes_no_lease_and_a_run_with_steps_does(store, tenant):
    # A run of pure steps is over when its StartRun's append commits: its driver has nothing to drive, so it
    # spends no lease round trips (two write transactions per run). A run with a side-effecting step still
    # runs that step under its lease, and gives the lease back at the end.
    leases = CountingLeases(store.pool, "replica-a", 30)
    engine = Engine(store, rng=random.Random(3), leases=leases)

    def start(nodes):
        return _driven_to_rest(engine, store, tenant, nodes)

    pure = await start([{"id": "a", "type": "transform", "config": {"template": {"n": "${inputs.n}"}}},
                        {"id": "b", "type": "echo", "depends_on": ["a"]}])
    assert (await _state(store, tenant, pure)).status == "completed"
    assert pure not in leases.acquired and pure not in leases.released

    effect = await start([{"id": "d", "type": "test.flaky", "config": {"failures": 0}}])
    assert (await _state(store, tenant, effect)).status == "completed"
    assert leases.acquired == [effect] and leases.released == [effect]
    assert await store.pool.fetchval("SELECT count(*) FROM run_leases WHERE run_id = ANY($1::uuid[])",
                                     [pure, effect]) == 0
