"""The command log (DESIGN section 3, docs/decisions/0030) under faults, with real processes: a command is
accepted when its row commits in Postgres, so nats-server down (or its whole store deleted) loses nothing
accepted, and Postgres down answers 503 for requests that then never run.

The module runs its own cluster (tests/test_faults.py's fixture) and ends only its own processes. The `soak`
variant of the store-loss test wipes the store several times under a longer load.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
import uuid

import httpx
import nats
import pytest

from tests.test_faults import (  # noqa: F401 - `cluster` is the module's fixture
    TENANT,
    Cluster,
    Submitted,
    assert_completed_once,
    assert_effects_once,
    cluster,
    create_workflow,
    executing,
    db_fetch,
    execute,
    http_node,
    runs_created_for,
    shape_node,
    until,
    wait_runs_finished,
)
from libs.events.bus import COMMANDS_STREAM, EVENTS_STREAM, ensure_streams, event_subject
from libs.events.settings import load_settings
from services.relay.app import headers_for
from tests.test_relay import stored_messages

# nats-server stays down longer than the gateway waits for an outcome, and longer than the relay's first
# republish delay (WEFT_COMMAND_REPUBLISH_S, 5 s): the relay's publishes fail meanwhile and must be retried.
NATS_DOWN_S = float(os.environ.get("WEFT_FAULT_OUTAGE_S", "7"))


async def workflow(cluster: Cluster, name: str, *, delay_s: float = 0.0) -> str:
    """post -> shape; with delay_s, a durable delay between them (its wake-up is a timer's command)."""
    nodes = [http_node("post", cluster)]
    if delay_s:
        nodes.append({"id": "wait", "type": "delay", "depends_on": ["post"], "config": {"seconds": delay_s}})
    nodes.append({**shape_node("post"), **({"depends_on": ["wait"]} if delay_s else {})})
    async with cluster.client() as c:
        return await create_workflow(c, name, nodes)


async def execute_batch(cluster: Cluster, workflow_id: str, prefix: str, n: int) -> list[Submitted]:
    """n executes at once, each with its own marker."""
    async with cluster.client() as c:
        return await asyncio.gather(*(execute(c, workflow_id, f"{prefix}-{i}-{uuid.uuid4().hex[:6]}")
                                      for i in range(n)))


async def test_execute_while_nats_is_down_is_accepted_and_runs_after_it_returns(cluster: Cluster):
    workflow_id = await workflow(cluster, "nats-down")
    await asyncio.to_thread(cluster.nats.stop, signal.SIGKILL)
    try:
        submitted = await execute_batch(cluster, workflow_id, "down", 6)
        await asyncio.sleep(NATS_DOWN_S)  # the relay's first republishes fail too
    finally:
        await asyncio.to_thread(cluster.nats.start)
    assert [s.status for s in submitted] == [202] * len(submitted), [s.body for s in submitted]
    events = await wait_runs_finished(cluster, [s.run_id for s in submitted], 60)
    assert_completed_once(events, ("post", "shape"))
    assert_effects_once(cluster.receiver, {s.run_id: s.marker for s in submitted}, 1)
    assert await runs_created_for(cluster, workflow_id) == sorted(f"run-{s.run_id}" for s in submitted)
    # Every logged command got its outcome, and the relay then cleared it from the log.
    await until(lambda: db_fetch(cluster, "SELECT count(*) AS n FROM command_log"), lambda r: r[0]["n"] == 0, 30,
                what="command log drained")


async def test_execute_while_postgres_is_down_answers_503_and_never_runs(cluster: Cluster):
    workflow_id = await workflow(cluster, "pg-down")
    await asyncio.to_thread(cluster.pg.stop, signal.SIGINT)
    try:
        submitted = await execute_batch(cluster, workflow_id, "pgdown", 6)
    finally:
        await asyncio.to_thread(cluster.pg.start)
    assert [s.status for s in submitted] == [503] * len(submitted), [s.body for s in submitted]
    assert all(s.retry_after for s in submitted)
    # Long enough for the relay to have published anything it held (its delay is 5 s) and the executor to run it.
    await asyncio.sleep(10)
    async with cluster.client() as c:  # the platform is up again: a request now runs
        after = await execute(c, workflow_id, f"pgup-{uuid.uuid4().hex[:6]}")
    assert after.status in (201, 202), after
    await wait_runs_finished(cluster, [after.run_id], 60)
    assert await runs_created_for(cluster, workflow_id) == [f"run-{after.run_id}"]
    by_marker = "SELECT count(*) AS n FROM events WHERE data->'inputs'->>'n' = ANY($1::text[])"
    assert (await db_fetch(cluster, by_marker, [after.marker]))[0]["n"] == 1  # the query does find a run's inputs
    assert (await db_fetch(cluster, by_marker, [s.marker for s in submitted]))[0]["n"] == 0


class SseClient:
    """Follows every run of a workflow on contract A's stream; when the server drops the stream (NATS
    reconnected) or the connection breaks, reconnects with Last-Event-ID, as EventSource does."""

    def __init__(self, cluster: Cluster, workflow_id: str) -> None:
        self.cluster, self.workflow_id = cluster, workflow_id
        self.ids: list[int] = []
        self.resumes = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def seen(self) -> set[int]:
        return set(self.ids)

    async def _follow(self) -> None:
        async with self.cluster.client() as c:
            while True:
                headers = {"Last-Event-ID": str(self.ids[-1])} if self.ids else {}
                try:
                    async with c.stream("GET", "/api/workflow/stream", params={"workflowId": self.workflow_id},
                                        headers=headers, timeout=httpx.Timeout(30, read=60)) as resp:
                        async for line in resp.aiter_lines():
                            if line.startswith("id:"):
                                self.ids.append(int(line[3:].strip()))
                except httpx.HTTPError:
                    pass
                self.resumes += 1
                await asyncio.sleep(0.2)


async def wipe_nats_store(cluster: Cluster) -> tuple[float, float]:
    """kill -9 nats-server, delete its whole store directory, start it again on the same port."""
    await asyncio.to_thread(cluster.nats.stop, signal.SIGKILL)
    down = time.monotonic()
    shutil.rmtree(cluster.nats.data_dir / "js")
    await asyncio.sleep(1.0)
    await asyncio.to_thread(cluster.nats.start)
    return down, time.monotonic()


async def store_loss_under_load(cluster: Cluster, *, wipes: int, load_s: float) -> None:
    # The delay puts runs across the outage with their wake-up commands fired by the scheduler's timers.
    workflow_id = await workflow(cluster, f"store-loss-{wipes}", delay_s=1.0)
    sse = SseClient(cluster, workflow_id)
    sse.start()
    outages = []
    # No Idempotency-Key: no retries either.
    async with executing(cluster, workflow_id, prefix="wipe", keyed=False, pause_s=0.02) as results:
        for _ in range(wipes):
            await asyncio.sleep(load_s / (wipes + 1))
            outages.append(await wipe_nats_store(cluster))
        await asyncio.sleep(load_s / (wipes + 1))
    statuses: dict[int, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    during = [r for r in results for down, up in outages if r.began < up and r.ended > down]
    print(f"{len(results)} requests, {len(during)} met an outage; by status {statuses}")
    assert during, "no request met an outage; the test proved nothing"
    # Postgres stayed up: every request was accepted (201 or 202), none refused or lost.
    assert set(statuses) <= {201, 202}, [r for r in results if r.status not in (201, 202)][:3]
    accepted = results
    events = await wait_runs_finished(cluster, [r.run_id for r in accepted], 120)
    assert_completed_once(events, ("post", "wait", "shape"))
    assert_effects_once(cluster.receiver, {r.run_id: r.marker for r in accepted}, 1)
    # Exactly one run per accepted request: nothing lost, nothing run twice.
    assert await runs_created_for(cluster, workflow_id) == sorted(f"run-{r.run_id}" for r in accepted)
    # The SSE client, resuming by Last-Event-ID across the outages, saw every event of every run once, in order.
    # A workflow's stream follows the global order, (xid, position) (docs/decisions/0032); ids are positions.
    rows = await db_fetch(cluster, "SELECT global_position FROM events WHERE stream_id = ANY($1::text[])"
                          " ORDER BY xid, global_position", [f"run-{r.run_id}" for r in accepted])
    expected = [r["global_position"] for r in rows]
    try:
        await until(sse.seen, lambda seen: set(expected) <= seen, 60, what="the SSE client reached every event")
    finally:
        await sse.stop()
    assert len(sse.ids) == len(set(sse.ids)), "the SSE client saw an event twice"
    missing = sorted(set(expected) - set(sse.ids))
    assert not missing, f"the SSE client missed {len(missing)} events, e.g. {missing[:5]}"
    wanted = set(expected)
    assert [i for i in sse.ids if i in wanted] == expected, "the SSE client saw events out of (xid, position) order"
    print(f"SSE client: {len(sse.ids)} events, {sse.resumes} resumes")
    # The relay refilled WEFT_EVENTS from the event store: every event of these runs is in the new stream.
    nc = await nats.connect(cluster.nats.url)
    try:
        stored = {int(m.headers["Weft-Position"]) for m in await stored_messages(nc.jetstream(), TENANT)}
    finally:
        await nc.close()
    missing = sorted(set(expected) - stored)
    assert not missing, f"WEFT_EVENTS lacks {len(missing)} events after the store loss, e.g. {missing[:5]}"
    assert sse.resumes >= wipes, "the stream was never dropped and resumed; the test proved less than it says"


_EVENT_ROWS = (
    "SELECT global_position, event_id::text, stream_id, version, type, data::text, tenant_id,"
    " metadata->>'correlation_id', metadata->>'causation_id', metadata->>'traceparent', xid"
    " FROM events WHERE stream_id = ANY($1::text[]) ORDER BY xid, global_position"
)


async def command_consumers(js) -> int:
    """How many consumers WEFT_COMMANDS has; 0 while the stream itself is missing."""
    try:
        return len(await js.consumers_info(COMMANDS_STREAM))
    except nats.errors.Error:
        return 0


async def test_a_recreated_stream_is_refilled_even_when_a_later_event_reached_it_first(cluster: Cluster):
    # The race the store-loss test met once under load: a publish buffered over the reconnect lands in the stream
    # the services declare anew, before the relay leads again. The stream's last position is then at or above the
    # checkpoint, yet it holds nothing from before the loss. Played here in order: runs relayed, the relay killed,
    # the store lost, more runs, one of their events in the new stream, the relay back.
    workflow_id = await workflow(cluster, "recreated-stream")
    before = await execute_batch(cluster, workflow_id, "before", 3)
    await wait_runs_finished(cluster, [s.run_id for s in before], 60)
    relayed = {r[0] for r in await db_fetch(cluster, _EVENT_ROWS, [f"run-{s.run_id}" for s in before])}
    nc = await nats.connect(cluster.nats.url)
    try:
        await until(lambda: stored_messages(nc.jetstream(), TENANT), lambda msgs: relayed <= {
            int(m.headers["Weft-Position"]) for m in msgs}, 30, what="the relay published the first runs")
        consumers = await command_consumers(nc.jetstream())
    finally:
        await nc.close()
    await until(lambda: db_fetch(cluster, "SELECT 1 FROM checkpoints c JOIN events e ON e.global_position = c.position"
                                          " WHERE c.name = 'relay' AND e.global_position = ANY($1::bigint[])",
                                 list(relayed)), bool, 30, what="the relay's checkpoint among the first runs' events")
    cluster.kill("relay")
    await wipe_nats_store(cluster)
    # Without the relay a command published before the services declared the streams again would wait in the
    # command log: wait until every consumer of WEFT_COMMANDS is back (keep_consumers, after the reconnect).
    nc = await nats.connect(cluster.nats.url)
    try:
        await until(lambda: command_consumers(nc.jetstream()), lambda n: n >= consumers, 30,
                    what="the services' command consumers declared again")
    finally:
        await nc.close()
    after = await execute_batch(cluster, workflow_id, "after", 2)
    await wait_runs_finished(cluster, [s.run_id for s in after], 60)
    rows = await db_fetch(cluster, _EVENT_ROWS, [f"run-{s.run_id}" for s in (*before, *after)])
    nc = await nats.connect(cluster.nats.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, load_settings({}))
        late = rows[-1]  # the newest event, published into the new stream ahead of the relay
        await js.publish(event_subject(late[6], late[2], late[4]), late[5].encode(), stream=EVENTS_STREAM,
                         headers=headers_for(late))
        cluster.start("relay")
        expected = {r[0] for r in rows}

        async def stored_positions() -> list[int]:
            return sorted(int(m.headers["Weft-Position"]) for m in await stored_messages(js, TENANT)
                          if int(m.headers["Weft-Position"]) in expected)

        positions = await until(stored_positions, lambda got: expected <= set(got), 30,
                                what=f"WEFT_EVENTS refilled with every event (expected {sorted(expected)})")
    finally:
        await nc.close()
    assert len(positions) == len(set(positions)), f"an event was stored twice: {positions}"


async def test_nats_store_deleted_under_load_loses_and_duplicates_nothing(cluster: Cluster):
    await store_loss_under_load(cluster, wipes=1, load_s=6.0)


@pytest.mark.soak
async def test_nats_store_deleted_repeatedly_under_longer_load(cluster: Cluster):
    await store_loss_under_load(cluster, wipes=4, load_s=60.0)
