"""Durable timers (libs/events/timers.py) and the scheduler's firing loops, in-process against a database no
service process watches and the session's real nats-server, with a controllable clock where time matters."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import nats
import pytest

from libs.events.bus import COMMANDS_STREAM, ensure_streams
from libs.events.schemas import CommandEnvelope, Metadata
from libs.events.schemas.run import EndDelay, StepStarted
from libs.events.schemas.schedule import OccurrenceFired, ScheduleCreated
from libs.events.schemas.workflow import WorkflowCreated
from libs.readmodels import project
from libs.events.store import EventStore, WrongExpectedVersion
from libs.events.timers import Timer, cancel_timer, set_timers, timer_id_for
from services.scheduler import domain
from services.scheduler.firing import ScheduleFirer
from services.scheduler.ticks import Ticker
from services.scheduler.timers import TimerFirer
from tests.conftest import migrated_database, poll

SERVICE = "schedtest"  # no Weft service consumes weft.cmd.schedtest.>, so the tests read what was published


def _timer(tenant: str, due: datetime, key: str | None = None) -> Timer:
    timer_id = timer_id_for("test", tenant, key or uuid.uuid4())
    command = EndDelay(run_id=uuid.uuid4(), step_id="d", at=due)
    envelope = CommandEnvelope(command_id=uuid.uuid5(timer_id, "command"), tenant_id=tenant, actor="test",
                               correlation_id="c", command=command, issued_at=due)
    return Timer(timer_id=timer_id, due_at=due, service=SERVICE, envelope=envelope)


@pytest.fixture(scope="module")
async def database(infra):
    """A database of this module's own: no service process fires its timers or schedules, and no other
    test's timers are due in it. (The firing loops read every tenant, as the owner.)"""
    dsn = await migrated_database(infra, "weft_sched")
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=20)
    yield dsn, EventStore(pool, projector=project)
    await pool.close()


@pytest.fixture
def store(database):
    return database[1]


@pytest.fixture
def dsn(database) -> str:
    return database[0]


@pytest.fixture
async def js(settings):
    nc = await nats.connect(settings.nats_url)
    stream = nc.jetstream()
    await ensure_streams(stream, settings)
    yield stream
    await nc.drain()


class CountingJetStream:
    """Forwards publishes to real JetStream and counts them per Nats-Msg-Id."""

    def __init__(self, js):
        self.js, self.published = js, Counter()

    async def publish(self, subject, payload, **kwargs):
        await asyncio.sleep(0.001)  # let a concurrent firer interleave
        self.published[kwargs["headers"]["Nats-Msg-Id"]] += 1
        return await self.js.publish(subject, payload, **kwargs)


async def _received(js, tenant: str, expect: int, timeout: float = 5.0) -> list:
    sub = await js.pull_subscribe(f"weft.cmd.{SERVICE}.{tenant}.>", stream=COMMANDS_STREAM)
    got: list = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < expect and asyncio.get_running_loop().time() < deadline:
        try:
            batch = await sub.fetch(100, timeout=0.5)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nats-py raises either when nothing came
            continue
        for msg in batch:
            await msg.ack()
        got += batch
    # A work-queue stream allows one consumer per filter: remove this one before the next call makes its own.
    name = (await sub.consumer_info()).name
    await sub.unsubscribe()
    await js.delete_consumer(COMMANDS_STREAM, name)
    return got


async def _timer_rows(store, tenant: str) -> list:
    async with store.tenant_transaction(tenant) as conn:
        return await conn.fetch("SELECT timer_id, status, due_at, fired_at FROM timers WHERE tenant_id = $1"
                                " ORDER BY due_at", tenant)


# --- the facility ------------------------------------------------------------------------------------------


async def test_a_timer_commits_with_its_events_or_not_at_all(store, tenant):
    sid = uuid.uuid4()
    meta = Metadata(tenant_id=tenant)
    timer = _timer(tenant, datetime.now(UTC))
    await store.append(f"run-{sid}", 0, [StepStarted(run_id=sid, step_id="a", at=datetime.now(UTC))], metadata=meta,
                       timers=[timer])
    with pytest.raises(WrongExpectedVersion):
        await store.append(f"run-{sid}", 0, [StepStarted(run_id=sid, step_id="b", at=datetime.now(UTC))],
                           metadata=meta, timers=[_timer(tenant, datetime.now(UTC))])
    assert [r["timer_id"] for r in await _timer_rows(store, tenant)] == [timer.timer_id]


async def test_a_timer_may_not_carry_a_command_into_another_tenant(store, tenant):
    with pytest.raises(ValueError, match="envelope tenant"):
        await store.append(f"run-{uuid.uuid4()}", 0, [StepStarted(run_id=uuid.uuid4(), step_id="a",
                                                                   at=datetime.now(UTC))],
                           metadata=Metadata(tenant_id=tenant), timers=[_timer(f"{tenant}x", datetime.now(UTC))])
    assert await _timer_rows(store, tenant) == []


async def test_set_twice_is_once_and_a_cancelled_or_fired_timer_stays_so(store, tenant, dsn, js):
    later = datetime.now(UTC) + timedelta(hours=1)
    first, moved = _timer(tenant, later, "a"), _timer(tenant, later + timedelta(hours=1), "a")
    async with store.tenant_transaction(tenant) as conn:
        await set_timers(conn, tenant, [first])
        await set_timers(conn, tenant, [moved])  # same id: moves the pending timer
    rows = await _timer_rows(store, tenant)
    assert len(rows) == 1 and rows[0]["due_at"] == moved.due_at
    async with store.tenant_transaction(tenant) as conn:
        assert await cancel_timer(conn, tenant, first.timer_id) is True
        await set_timers(conn, tenant, [first])  # a replayed decision does not revive it
        assert await cancel_timer(conn, tenant, first.timer_id) is False
        pending = _timer(tenant, later, "c")
        await set_timers(conn, tenant, [pending])
        assert await cancel_timer(conn, f"{tenant}x", pending.timer_id) is False  # not another tenant's to cancel
    due_now = _timer(tenant, datetime.now(UTC), "b")
    async with store.tenant_transaction(tenant) as conn:
        await set_timers(conn, tenant, [due_now])
    conn = await asyncpg.connect(dsn)
    try:
        firer = TimerFirer(dsn, js)
        assert await firer.fire_due(conn) >= 1
        async with store.tenant_transaction(tenant) as tconn:
            await set_timers(tconn, tenant, [due_now])  # set again after it fired: nothing new
            assert await cancel_timer(tconn, tenant, due_now.timer_id) is False
        await firer.fire_due(conn)
    finally:
        await conn.close()
    assert {r["timer_id"]: r["status"] for r in await _timer_rows(store, tenant)} == {
        first.timer_id: "cancelled", due_now.timer_id: "fired", pending.timer_id: "pending"}
    got = await _received(js, tenant, 1)
    assert [m.headers["Nats-Msg-Id"] for m in got] == [str(due_now.envelope.command_id)]


async def test_the_loop_sleeps_until_a_timer_is_due_wakes_on_notify_and_fires_it_once(store, tenant, dsn, js):
    firer = TimerFirer(dsn, js, poll_s=60.0)  # no polling within the test: only due times and NOTIFY wake it
    task = asyncio.create_task(firer.run())
    try:
        await asyncio.sleep(0.3)  # the loop is asleep now (nothing pending for this test's tenant)
        due = datetime.now(UTC) + timedelta(seconds=0.8)
        timer = _timer(tenant, due)
        async with store.tenant_transaction(tenant) as conn:
            await set_timers(conn, tenant, [timer])
        rows = await poll(lambda: _timer_rows(store, tenant), lambda rs: rs[0]["status"] == "fired", timeout=10)
        assert rows[0]["fired_at"] >= due  # not before its time
        got = await _received(js, tenant, 1)
        assert len(got) == 1
        envelope = msgspec.json.decode(got[0].data, type=CommandEnvelope[EndDelay])
        assert envelope.command_id == timer.envelope.command_id and got[0].subject.endswith(f".{tenant}.EndDelay")
        await asyncio.sleep(0.5)
        assert await _received(js, tenant, 1, timeout=0.6) == []  # fired once
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_two_firing_loops_publish_each_timer_once(store, tenant, dsn, js):
    timers = [_timer(tenant, datetime.now(UTC) - timedelta(seconds=1)) for _ in range(150)]
    async with store.tenant_transaction(tenant) as conn:
        await set_timers(conn, tenant, timers)
    counting = CountingJetStream(js)
    firers = [TimerFirer(dsn, counting, batch=40), TimerFirer(dsn, counting, batch=40)]
    conns = [await asyncpg.connect(dsn) for _ in firers]
    try:
        while True:
            fired = await asyncio.gather(*(f.fire_due(c) for f, c in zip(firers, conns, strict=True)))
            if not any(fired):
                break
    finally:
        for c in conns:
            await c.close()
    assert firers[0].fired and firers[1].fired, "both loops should have taken a share"
    mine = {str(t.envelope.command_id) for t in timers}
    assert {k: v for k, v in counting.published.items() if k in mine} == dict.fromkeys(mine, 1)
    assert {r["status"] for r in await _timer_rows(store, tenant)} == {"fired"}
    await _received(js, tenant, 150)  # drain


# --- schedules: the firing loop with a controllable clock ----------------------------------------------------


async def _workflow(store, tenant: str, **definition) -> uuid.UUID:
    wid = uuid.uuid4()
    await store.append(f"workflow-{wid}", 0, [WorkflowCreated(
        workflow_id=wid, name=f"wf-{wid.hex[:8]}", definition={"nodes": [{"id": "s", "type": "echo"}], **definition},
        created_by="alice", at=datetime.now(UTC))], metadata=Metadata(tenant_id=tenant))
    return wid


async def _schedule(store, tenant: str, wid: uuid.UUID, at: datetime, expression: str = "* * * * *",
                    **settings) -> uuid.UUID:
    sid = uuid.uuid4()
    await store.append(f"schedule-{sid}", 0, [ScheduleCreated(
        schedule_id=sid, workflow_id=wid, cron_expression=expression, created_by="alice", at=at, **settings)],
        metadata=Metadata(tenant_id=tenant))
    return sid


async def _fired(store, tenant: str, sid: uuid.UUID) -> list[OccurrenceFired]:
    from libs.events.schemas.registry import event_of

    return [e for e in map(event_of, await store.read_stream(tenant, f"schedule-{sid}")) if isinstance(e, OccurrenceFired)]


class FakeClock:
    def __init__(self, offset: timedelta):
        self.offset = offset

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


async def test_the_schedule_loop_sleeps_until_the_next_due_time_then_fires(store, tenant, dsn):
    # A clock 1.5 s before a minute boundary, so an every-minute schedule comes due 1.5 s into the test.
    real = datetime.now(UTC)
    boundary = (real + timedelta(minutes=2)).replace(second=0, microsecond=0)
    clock = FakeClock(boundary - timedelta(seconds=1.5) - real)
    wid = await _workflow(store, tenant)
    sid = await _schedule(store, tenant, wid, clock() - timedelta(seconds=20))
    ticker = Ticker(store, clock=clock)
    firer = ScheduleFirer(dsn, ticker, poll_s=60.0)
    looks = 0
    original = firer.fire_due

    async def counted(conn):
        nonlocal looks
        looks += 1
        return await original(conn)

    firer.fire_due = counted
    task = asyncio.create_task(firer.run())
    try:
        fired = await poll(lambda: _fired(store, tenant, sid), lambda f: len(f) == 1, timeout=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert fired[0].occurrence_at == boundary and fired[0].at >= boundary
    # It slept until the due time (other tests' schedules in this database may wake it, a few times at most),
    # rather than looking every second or more often.
    assert looks <= 6, looks
    async with store.tenant_transaction(tenant) as conn:
        timer = await conn.fetchrow("SELECT service, command_type, envelope::text AS envelope FROM timers"
                                    " WHERE tenant_id = $1", tenant)
    assert (timer["service"], timer["command_type"]) == ("executor", "StartRun")
    start = msgspec.json.decode(timer["envelope"])
    assert start["command"]["run_id"] == str(domain.run_id_for(sid, boundary))
    assert start["command"]["workflow_id"] == str(wid) and start["actor"] == f"schedule:{sid}"


async def test_two_tickers_racing_on_the_same_schedules_fire_each_occurrence_once(store, tenant):
    """No leader lock here: two replicas tick the same due schedules at once. The expected-version append is
    the fence, and the run id (and timer id) derive from the occurrence."""
    now = datetime.now(UTC)
    wid = await _workflow(store, tenant, concurrency="unlimited")
    sids = [await _schedule(store, tenant, wid, now - timedelta(minutes=5, seconds=30), missed_execution_policy="queue",
                            overlap_policy="allow") for _ in range(12)]
    a, b = Ticker(store), Ticker(store)
    for _ in range(3):
        await asyncio.gather(*(t.tick(tenant, sid) for sid in sids for t in (a, b)))
    async with store.tenant_transaction(tenant) as conn:
        timers = await conn.fetch("SELECT envelope->'command'->>'run_id' AS run_id FROM timers WHERE tenant_id = $1",
                                  tenant)
    total = 0
    for sid in sids:
        fired = await _fired(store, tenant, sid)
        occurrences = [f.occurrence_at for f in fired]
        assert len(occurrences) == len(set(occurrences)) >= 4, occurrences  # 4-5 missed + on time, each once
        assert {f.run_id for f in fired} == {domain.run_id_for(sid, o) for o in occurrences}
        total += len(fired)
    assert len(timers) == total and len({t["run_id"] for t in timers}) == total


async def test_the_schedule_read_models_rebuild_from_the_log_exactly(store, dsn):
    """`weft projections rebuild` gives the same schedules and occurrence rows as the live projection did."""
    from libs.readmodels import rebuild

    tables = {"schedules": "SELECT * FROM schedules ORDER BY id",
              "schedule_occurrences": "SELECT * FROM schedule_occurrences ORDER BY schedule_id, seq"}
    conn = await asyncpg.connect(dsn)
    try:
        before = {name: [dict(r) for r in await conn.fetch(sql)] for name, sql in tables.items()}
        assert before["schedules"] and before["schedule_occurrences"], "earlier tests should have left history"
        await rebuild(conn)
        after = {name: [dict(r) for r in await conn.fetch(sql)] for name, sql in tables.items()}
    finally:
        await conn.close()
    assert after == before


async def test_a_schedule_whose_tick_keeps_failing_is_retried_later_not_in_a_hot_loop(store, tenant, dsn):
    wid = await _workflow(store, tenant)
    sid = await _schedule(store, tenant, wid, datetime.now(UTC) - timedelta(minutes=2))
    attempts = []

    class BrokenTicker(Ticker):
        async def tick(self, tenant_id, schedule_id):
            if schedule_id == sid:
                attempts.append(asyncio.get_running_loop().time())
                raise RuntimeError("a bug in one schedule")
            return await super().tick(tenant_id, schedule_id)

    firer = ScheduleFirer(dsn, BrokenTicker(store), poll_s=60.0, idle_retry_s=0.5)
    looks = 0
    original = firer.fire_due

    async def counted(conn):
        nonlocal looks
        looks += 1
        return await original(conn)

    firer.fire_due = counted
    task = asyncio.create_task(firer.run())
    try:
        await poll(lambda: asyncio.sleep(0, len(attempts)), lambda n: n >= 3, timeout=20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Retried after the retry interval each time, and the loop slept in between instead of spinning.
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert all(gap >= 0.45 for gap in gaps), gaps
    assert looks <= 4 * len(attempts) + 6, (looks, len(attempts))
