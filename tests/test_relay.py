"""The relay (services/relay/app.py) as a real process: event store -> JetStream WEFT_EVENTS.

Every assertion is per tenant (subjects weft.evt.<tenant>.>), never on global counts, because other
modules share the database and the stream. Only one relay may lead (a session advisory lock); the
`sole_relay` fixture makes sure the relay these tests start is the leader: if another relay leads (the
session `stack`'s, when a module that used `stack` ran first), it is stopped for this module and started
again afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import msgspec
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from libs.events.bus import EVENTS_STREAM
from services.relay.app import CHECKPOINT, RELAY_LOCK_KEY
from libs.events.schemas import Metadata
from libs.events.schemas.run import RunCompleted, RunStarted, StepCompleted, StepStarted
from libs.events.store import EventStore
from tests.conftest import Infra, poll, start_processes
from tests.test_metrics import scrape, value

# pg_locks shows a bigint advisory key as classid (high 32 bits), objid (low 32 bits), objsubid 1.
_LEADERS_SQL = (
    "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = $1 AND l.objid::bigint = $2"
    " AND l.objsubid = 1"
)


async def relay_leaders(pool: asyncpg.Pool) -> list[str]:
    """application_name of every session holding the relay's leader lock (at most one)."""
    rows = await pool.fetch(_LEADERS_SQL, RELAY_LOCK_KEY >> 32, RELAY_LOCK_KEY & 0xFFFF_FFFF)
    return [r["application_name"] for r in rows]


async def checkpoint(pool: asyncpg.Pool) -> tuple[int, int]:
    """The relay's checkpoint as a cursor, (xid, position) of the event it names: the global order's key
    (docs/decisions/0032); compare it with cursor(event)."""
    row = await pool.fetchrow(
        "SELECT e.xid, e.global_position FROM checkpoints c JOIN events e ON e.global_position = c.position"
        " WHERE c.name = $1", CHECKPOINT)
    return (0, 0) if row is None else (row[0], row[1])


def cursor(event: asyncpg.Record) -> tuple[int, int]:
    return event["xid"], event["global_position"]


class OwnRelay:
    """One relay process of our own, told apart in pg_stat_activity by a unique application_name."""

    def __init__(self, infra: Infra, pool: asyncpg.Pool):
        self.app_name = f"test-relay-{uuid.uuid4().hex[:8]}"
        # start_processes sets WEFT_DATABASE_URL from infra.database_url; asyncpg passes unknown DSN
        # query parameters on as server settings, so every connection of the process carries the name.
        self.infra = dataclasses.replace(infra, database_url=f"{infra.database_url}?application_name={self.app_name}")
        self.pool = pool
        self.proc = None
        self.port = 0

    def _start_blocking(self) -> None:
        from deploy.local.stack import wait_http

        if self.proc is None:
            procs, ports = start_processes(self.infra, ["relay"], self.infra.root / "relay-logs")
            self.proc, self.port = procs["relay"], ports["relay"]
        else:
            self.proc.start()
            wait_http(self.port)

    async def start_leading(self) -> None:
        """Start the process and wait until it holds the leader lock (so it is the one relaying)."""
        await asyncio.to_thread(self._start_blocking)
        await poll(lambda: relay_leaders(self.pool), lambda names: names == [self.app_name], timeout=30)

    async def kill(self) -> None:
        """kill -9, then wait until Postgres has ended its session (the lock is free again)."""
        self.proc.kill()
        await poll(lambda: relay_leaders(self.pool), lambda names: names == [], timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture(scope="module")
async def sole_relay(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[None]:
    """No relay but ours may lead during this module."""
    paused = None
    if await relay_leaders(pool):
        # The only other relay this suite runs is the session stack's: stop it for this module.
        stack = request.getfixturevalue("stack")
        stack.procs["relay"].stop()
        paused = stack
        try:
            await poll(lambda: relay_leaders(pool), lambda names: names == [], timeout=30)
        except AssertionError:
            paused.procs["relay"].start()
            pytest.skip(f"another relay holds the leader lock: {await relay_leaders(pool)}")
    try:
        yield
    finally:
        if paused is not None:
            from deploy.local.stack import wait_http

            paused.procs["relay"].start()
            await asyncio.to_thread(wait_http, paused.ports["relay"])


@pytest.fixture
async def relay(infra: Infra, pool: asyncpg.Pool, sole_relay) -> AsyncIterator[OwnRelay]:
    r = OwnRelay(infra, pool)
    try:
        yield r
    finally:
        await asyncio.to_thread(r.stop)


@pytest.fixture
async def js(infra: Infra):
    nc = await nats.connect(infra.nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@pytest.fixture
def raw_store(pool: asyncpg.Pool, settings) -> EventStore:
    """No inline projector: these run events have no RunCreated, and projecting them is beside the point."""
    return EventStore(pool, app_role=settings.db_app_role, projector=None)


def run_events(n: int, run_id: uuid.UUID) -> list:
    at = datetime.now(UTC)
    events: list = [RunStarted(run_id=run_id, at=at)]
    i = 0
    while len(events) < n - 1:
        events.append(StepStarted(run_id=run_id, step_id=f"s{i}", at=at))
        events.append(StepCompleted(run_id=run_id, step_id=f"s{i}", output={"i": i}, at=at))
        i += 1
    events.append(RunCompleted(run_id=run_id, outputs={"n": n}, at=at))
    return events[:n]


async def append_runs(store: EventStore, tenant: str, streams: int, per_stream: int, **meta) -> None:
    for _ in range(streams):
        run_id = uuid.uuid4()
        await store.append(f"run-{run_id}", 0, run_events(per_stream, run_id), metadata=Metadata(tenant_id=tenant, **meta))


async def tenant_events(pool: asyncpg.Pool, tenant: str) -> list[asyncpg.Record]:
    """The tenant's events as recorded (superuser: row-level security does not apply), in the global order."""
    return await pool.fetch(
        "SELECT global_position, xid, event_id, stream_id, version, type, data::text AS data,"
        " metadata::text AS metadata FROM events WHERE tenant_id = $1 ORDER BY xid, global_position",
        tenant,
    )


def _consumer_config() -> ConsumerConfig:
    return ConsumerConfig(
        name=f"test-{uuid.uuid4().hex}", deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
    )


async def count_stored(js, tenant: str) -> int:
    """How many messages WEFT_EVENTS holds for the tenant."""
    config = _consumer_config()
    config.filter_subject = f"weft.evt.{tenant}.>"
    info = await js.add_consumer(EVENTS_STREAM, config=config)
    await js.delete_consumer(EVENTS_STREAM, config.name)
    return info.num_pending


async def stored_messages(js, tenant: str) -> list:
    """Every message WEFT_EVENTS holds for the tenant, in stream order."""
    sub = await js.pull_subscribe(f"weft.evt.{tenant}.>", stream=EVENTS_STREAM, config=_consumer_config())
    try:
        total = (await sub.consumer_info()).num_pending
        msgs: list = []
        while len(msgs) < total:
            msgs += await sub.fetch(min(500, total - len(msgs)), timeout=10)
        assert (await sub.consumer_info()).num_pending == 0
        return msgs
    finally:
        await sub.unsubscribe()


class Wiretap:
    """A core-NATS subscription on the tenant's subjects: sees every publish, duplicates included
    (JetStream's duplicate window drops them from the stream, not from the wire)."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.nc = None

    async def start(self, url: str, tenant: str) -> Wiretap:
        self.nc = await nats.connect(url)

        async def on_msg(msg) -> None:
            self.positions.append(int(msg.headers["Weft-Position"]))

        await self.nc.subscribe(f"weft.evt.{tenant}.>", cb=on_msg, pending_msgs_limit=1_000_000)
        await self.nc.flush()
        return self

    async def close(self) -> None:
        await self.nc.flush()
        await self.nc.close()


def assert_each_event_stored_once(msgs: list, events: list[asyncpg.Record]) -> None:
    """Messages are matched to events by Weft-Position (not by Nats-Msg-Id, the dedupe key under test)."""
    event_id_at = {e["global_position"]: str(e["event_id"]) for e in events}
    ids = [event_id_at.get(int(m.headers["Weft-Position"]), f"?{m.headers['Weft-Position']}") for m in msgs]
    dupes = {i: c for i, c in Counter(ids).items() if c > 1}
    assert not dupes, f"{len(dupes)} of {len(events)} events stored more than once, e.g. {list(dupes.items())[:3]}"
    expected = [str(e["event_id"]) for e in events]
    missing = set(expected) - set(ids)
    assert not missing, f"{len(missing)} of {len(expected)} events never reached WEFT_EVENTS"
    extra = set(ids) - set(expected)
    assert not extra, f"{len(extra)} unexpected messages on the tenant's subjects: {list(extra)[:3]}"
    assert ids == expected, "WEFT_EVENTS holds the tenant's events out of (xid, position) order"


async def test_every_event_reaches_the_stream_once_in_global_order(relay, js, raw_store, pool, tenant):
    other = f"t{uuid.uuid4().hex[:12]}"
    run_a, run_b = uuid.uuid4(), uuid.uuid4()
    corr, cause = str(uuid.uuid4()), str(uuid.uuid4())
    # Interleave two streams of ours and another tenant's, so position order differs from stream order.
    a = run_events(7, run_a)
    await raw_store.append(f"run-{run_a}", 0, a[:3], metadata=Metadata(tenant_id=tenant, correlation_id=corr))
    await append_runs(raw_store, other, 2, 5)
    await raw_store.append(f"run-{run_b}", 0, run_events(4, run_b), metadata=Metadata(tenant_id=tenant))
    await raw_store.append(
        f"run-{run_a}", 3, a[3:], metadata=Metadata(tenant_id=tenant, correlation_id=corr, causation_id=cause)
    )
    await append_runs(raw_store, other, 1, 3)
    events = await tenant_events(pool, tenant)
    assert len(events) == 11
    last = max(cursor(e) for e in await tenant_events(pool, other))

    await relay.start_leading()
    await poll(lambda: checkpoint(pool), lambda cp: cp >= last, timeout=60)

    msgs = await stored_messages(js, tenant)
    assert_each_event_stored_once(msgs, events)
    seqs = [m.metadata.sequence.stream for m in msgs]
    assert seqs == sorted(seqs)
    for msg, ev in zip(msgs, events, strict=True):
        category, _, key = ev["stream_id"].partition("-")
        assert category == "run"
        assert msg.subject == f"weft.evt.{tenant}.run.{key}.{ev['type']}"
        assert msg.headers.get("Nats-Msg-Id") == str(ev["event_id"])
        assert msg.headers["Weft-Tenant"] == tenant
        assert msg.headers["Weft-Stream"] == ev["stream_id"]
        assert msg.headers["Weft-Version"] == str(ev["version"])
        assert msg.headers["Weft-Position"] == str(ev["global_position"])
        assert msg.headers["Weft-Xid"] == str(ev["xid"])
        assert msg.headers["Weft-Type"] == ev["type"]
        meta = msgspec.json.decode(ev["metadata"])
        assert msg.headers.get("Weft-Correlation-Id") == meta.get("correlation_id")
        assert msg.headers.get("Weft-Causation-Id") == meta.get("causation_id")
        assert msgspec.json.decode(msg.data) == msgspec.json.decode(ev["data"])
    # Stream order is per stream version order too.
    a_versions = [int(m.headers["Weft-Version"]) for m in msgs if m.headers["Weft-Stream"] == f"run-{run_a}"]
    assert a_versions == list(range(1, 8))
    # The other tenant's events went to its own subjects only.
    assert await count_stored(js, other) == 13


async def kill_until_ahead(relay: OwnRelay, pool, js, tenant: str, positions: list[tuple[int, int]],
                           first: tuple[int, int], kills: list[dict]) -> bool:
    """Start the relay and kill -9 it while a batch is in flight, up to six times, until one kill leaves WEFT_EVENTS
    ahead of the checkpoint (published, checkpoint not saved). False when the relay reached the tenant's last
    event first: a restart with less than one checkpoint interval to go saves the last position at its first
    save, and no later save will ever come (nothing else appends), so there is nothing left to interrupt.
    Positions here are cursors, (xid, global_position): the global order (docs/decisions/0032)."""
    last = positions[-1]
    for _ in range(6):
        await relay.start_leading()
        start = await checkpoint(pool)
        if start >= last:
            return False
        moved = await poll(lambda s=start: checkpoint(pool), lambda cp, s=start: cp > s and cp >= first,
                           timeout=60, every=0.001)
        if moved >= last:
            return False
        t1 = time.monotonic()
        moved_again = await poll(lambda m=moved: checkpoint(pool), lambda cp, m=moved: cp > m, timeout=60, every=0.001)
        if moved_again >= last:
            return False
        # Half a batch interval after a checkpoint save: the next batch is being published.
        batch_s = time.monotonic() - t1
        await asyncio.sleep(batch_s / 2)
        await relay.kill()
        at_kill = await checkpoint(pool)
        if at_kill >= last:
            return False
        stored = await count_stored(js, tenant)
        checkpointed = sum(1 for p in positions if p <= at_kill)
        kills.append({"checkpoint": at_kill, "stored": stored, "checkpointed": checkpointed})
        if stored > checkpointed:
            return True
    return False


async def test_kill_9_mid_stream_loses_nothing_and_stores_nothing_twice(relay, js, raw_store, pool, infra, tenant):
    wiretap = await Wiretap().start(infra.nats_url, tenant)
    kills: list[dict] = []
    try:
        # Each attempt appends 4000 events with the relay down, then kills it mid-stream (kill_until_ahead). An
        # attempt whose relay ran through to the end first (a kill that left nothing ahead, then a restart with
        # little to go: seen under load) gets 4000 fresh events to try again.
        for _ in range(3):
            if relay.proc is not None and relay.proc.alive():
                await relay.kill()
            await append_runs(raw_store, tenant, streams=80, per_stream=50)
            cursors = [cursor(e) for e in await tenant_events(pool, tenant)]
            first = cursors[-4000]
            if await kill_until_ahead(relay, pool, js, tenant, cursors, first, kills):
                break
        if not relay.proc.alive():
            await relay.start_leading()
        events = await tenant_events(pool, tenant)
        first, last = cursor(events[0]), cursor(events[-1])
        await poll(lambda: checkpoint(pool), lambda cp: cp >= last, timeout=90)
        await poll(lambda: asyncio.sleep(0, len(wiretap.positions)), lambda n: n >= len(events), timeout=10)
    finally:
        await wiretap.close()

    assert kills, "the relay ran through before it could be killed mid-stream"
    assert any(first <= k["checkpoint"] < last for k in kills)
    ahead = [k for k in kills if k["stored"] > k["checkpointed"]]
    assert ahead, f"no kill landed between publish and checkpoint save (kills: {kills}); the crash window went untested"
    # The restart did republish what was stored beyond the checkpoint: the wire saw those ids twice.
    republished = [i for i, c in Counter(wiretap.positions).items() if c > 1]
    assert len(republished) >= ahead[0]["stored"] - ahead[0]["checkpointed"], kills
    # ... and the stream kept each event once, in position order.
    assert_each_event_stored_once(await stored_messages(js, tenant), events)


async def test_republish_after_lost_checkpoint_is_dropped_by_the_duplicate_window(
    relay, js, raw_store, pool, infra, tenant
):
    await append_runs(raw_store, tenant, streams=10, per_stream=30)
    events = await tenant_events(pool, tenant)
    first, last = cursor(events[0]), cursor(events[-1])
    await relay.start_leading()
    await poll(lambda: checkpoint(pool), lambda cp: cp >= last, timeout=60)
    before = await stored_messages(js, tenant)
    assert_each_event_stored_once(before, events)

    # A crash after the PubAcks but before the checkpoint was saved, replayed deterministically: the
    # relay reads its checkpoint only when it becomes leader, so kill it, rewind, start it again.
    await relay.kill()
    assert await pool.execute("UPDATE checkpoints SET position = $1 WHERE name = $2", first[1] - 1, CHECKPOINT) == "UPDATE 1"
    wiretap = await Wiretap().start(infra.nats_url, tenant)
    try:
        await relay.start_leading()
        await poll(lambda: checkpoint(pool), lambda cp: cp >= last, timeout=60)
        expected = {e["global_position"] for e in events}
        # The relay did publish every event again (the wire saw them) ...
        await poll(lambda: asyncio.sleep(0, set(wiretap.positions)), lambda seen: expected <= seen, timeout=10)
    finally:
        await wiretap.close()
    assert Counter(wiretap.positions) == Counter(expected), "the relay republished something other than the rewound events"
    # ... and the stream dropped every one of them: same messages, same sequences, nothing added.
    after = await stored_messages(js, tenant)
    assert_each_event_stored_once(after, events)
    assert [m.metadata.sequence.stream for m in after] == [m.metadata.sequence.stream for m in before]


async def waiting_on_a_lock(pool: asyncpg.Pool, app_name: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
                               " AND wait_event_type = 'Lock'", app_name)


async def test_a_leader_killed_while_its_backend_waits_on_a_lock_hands_over_within_seconds(
    relay, raw_store, pool, infra, tenant
):
    """The leader lock lives as long as the leader's Postgres session. A backend waiting on a lock does not read its
    socket, so without LEADER_SESSION's client check it kept the lock until the wait ended (here: never)."""
    await pool.execute("INSERT INTO checkpoints (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING", CHECKPOINT)
    await relay.start_leading()
    standby = OwnRelay(infra, pool)
    holder = await pool.acquire()
    tx, started = holder.transaction(), False
    try:
        await asyncio.to_thread(standby._start_blocking)  # ready, polling for the lock the leader holds
        await tx.start()
        started = True
        # A table lock, not a row lock: a row lock would give this transaction an xid, and the relay publishes
        # nothing above a running transaction's xid (docs/decisions/0032), so its save would never come.
        await holder.execute("LOCK TABLE checkpoints IN EXCLUSIVE MODE")
        await append_runs(raw_store, tenant, streams=1, per_stream=3)  # published, then its save waits on our row
        await poll(lambda: waiting_on_a_lock(pool, relay.app_name), bool, timeout=30)
        relay.proc.kill()
        killed = time.monotonic()
        await poll(lambda: relay_leaders(pool), lambda names: names == [standby.app_name], timeout=20)
        took = time.monotonic() - killed
        print(f"\nthe standby led {took:.2f} s after kill -9 of a leader whose backend waited on a lock")
        assert took < 10
    finally:
        if started:
            await tx.rollback()
        await pool.release(holder)
        await asyncio.to_thread(standby.stop)


async def held_back_seconds(port: int) -> float:
    _, samples = await scrape(port)
    return value(samples, "weft_relay_held_back_seconds")


async def test_events_held_back_by_an_older_running_transaction_show_in_held_back_seconds(
    relay, js, raw_store, pool, tenant
):
    """A transaction holding an id holds every later committer's events back (docs/decisions/0032); the relay says
    for how long (weft_relay_held_back_seconds, docs/operations.md), and 0 once it has ended."""
    await relay.start_leading()
    await append_runs(raw_store, tenant, streams=1, per_stream=1)
    await poll(lambda: count_stored(js, tenant), lambda n: n == 1, timeout=30)  # the relay is publishing
    holder = await pool.acquire()
    tx = holder.transaction()
    await tx.start()
    try:
        await holder.fetchval("SELECT pg_current_xact_id()")  # takes an id now, as a write or a row lock would
        await append_runs(raw_store, tenant, streams=1, per_stream=2)  # committed, above the running id
        held = await poll(lambda: held_back_seconds(relay.port), lambda s: s >= 1.0, timeout=30, every=0.2)
        assert await count_stored(js, tenant) == 1  # not published meanwhile: what the gauge is about
    finally:
        await tx.rollback()
        await pool.release(holder)
    await poll(lambda: count_stored(js, tenant), lambda n: n == 3, timeout=30)
    await poll(lambda: held_back_seconds(relay.port), lambda s: s == 0.0, timeout=30, every=0.2)
    assert held < 30
