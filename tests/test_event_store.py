"""Proofs of the event store's guarantees against the real Postgres.

Every test works in its own tenant and its own stream ids, so tests share one database without
interfering. System-level checks (what is really in the table, append-only for the superuser) use raw
superuser connections, which bypass row-level security.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest

from libs.events.schemas import Metadata, Outcome
from libs.events.schemas.run import RunFailed, RunStarted, StepCompleted, StepStarted
from libs.events.order import cursor_at, read_all
from libs.events.store import (
    CommandAlreadyProcessed,
    EventStore,
    RecordedEvent,
    WrongExpectedVersion,
)


@pytest.fixture(scope="module")
def raw_store(pool: asyncpg.Pool, settings) -> EventStore:
    """The store without projections, so only the log itself is under test."""
    return EventStore(pool, app_role=settings.db_app_role, projector=None)


def run_stream() -> tuple[str, uuid.UUID]:
    run_id = uuid.uuid4()
    return f"run-{run_id}", run_id


def steps(run_id: uuid.UUID, n: int, prefix: str = "s") -> list[StepStarted]:
    now = datetime.now(UTC)
    return [StepStarted(run_id=run_id, step_id=f"{prefix}{i}", at=now) for i in range(n)]


async def table_rows(pool: asyncpg.Pool, tenant_id: str) -> list[asyncpg.Record]:
    """What the events table really holds for a tenant (superuser: no row-level security)."""
    return await pool.fetch(
        "SELECT global_position, stream_id, version, type, data::text AS data, metadata::text AS metadata"
        " FROM events WHERE tenant_id = $1 ORDER BY global_position",
        tenant_id,
    )


# --- append and read_stream -------------------------------------------------------------------------


async def test_append_then_read_stream_in_version_order_with_metadata(raw_store: EventStore, tenant: str):
    stream, run_id = run_stream()
    now = datetime.now(UTC)
    first = [RunStarted(run_id=run_id, at=now), *steps(run_id, 2)]
    second = [StepCompleted(run_id=run_id, step_id="s0", output={"n": 1}, at=now), RunFailed(run_id=run_id, error="x", at=now)]
    meta1 = Metadata(tenant_id=tenant, correlation_id="corr-1", actor="alice", command_id=str(uuid.uuid4()))
    meta2 = Metadata(tenant_id=tenant, correlation_id="corr-2", causation_id="cause-2")

    out1 = await raw_store.append(stream, 0, first, metadata=meta1, status=201)
    out2 = await raw_store.append(stream, 3, second, metadata=meta2)

    assert (out1.command_id, out1.status, out1.stream_id, out1.version) == (
        uuid.UUID(meta1.command_id), 201, stream, 3,
    )
    assert (out2.status, out2.stream_id, out2.version) == (200, stream, 5)

    got = await raw_store.read_stream(tenant, stream)
    assert [r.version for r in got] == [1, 2, 3, 4, 5]
    assert [r.type for r in got] == ["RunStarted", "StepStarted", "StepStarted", "StepCompleted", "RunFailed"]
    positions = [r.global_position for r in got]
    assert positions == sorted(positions) and len(set(positions)) == 5
    assert all(r.stream_id == stream and r.tenant_id == tenant for r in got)
    assert [r.metadata for r in got[:3]] == [msgspec.to_builtins(meta1)] * 3
    assert [r.metadata for r in got[3:]] == [msgspec.to_builtins(meta2)] * 2
    assert got[0].metadata == {"tenant_id": tenant, "correlation_id": "corr-1", "actor": "alice",
                               "command_id": meta1.command_id}
    # The payloads round-trip: the stored data decodes back to the appended events.
    decoder = msgspec.json.Decoder(RunStarted | StepStarted | StepCompleted | RunFailed)
    assert [decoder.decode(r.data) for r in got] == [*first, *second]
    assert len({r.event_id for r in got}) == 5

    assert [r.version for r in await raw_store.read_stream(tenant, stream, to_version=2)] == [1, 2]
    assert await raw_store.read_stream(tenant, f"run-{uuid.uuid4()}") == []


async def test_another_tenants_read_stream_of_the_same_id_is_empty(raw_store: EventStore, tenant: str):
    stream, run_id = run_stream()
    await raw_store.append(stream, 0, steps(run_id, 2), metadata=Metadata(tenant_id=tenant))
    other = f"t{uuid.uuid4().hex[:12]}"
    assert await raw_store.read_stream(other, stream) == []
    assert len(await raw_store.read_stream(tenant, stream)) == 2


# --- optimistic concurrency --------------------------------------------------------------------------


async def test_wrong_expected_version_when_stale(raw_store: EventStore, tenant: str):
    stream, run_id = run_stream()
    meta = Metadata(tenant_id=tenant)
    await raw_store.append(stream, 0, steps(run_id, 2), metadata=meta)

    for stale in (0, 1):
        with pytest.raises(WrongExpectedVersion) as err:
            await raw_store.append(stream, stale, steps(run_id, 1, "late"), metadata=meta)
        assert (err.value.stream_id, err.value.expected, err.value.actual) == (stream, stale, 2)

    assert [r.version for r in await raw_store.read_stream(tenant, stream)] == [1, 2]
    assert [(r["version"], r["type"]) for r in await table_rows(raw_store.pool, tenant)] == [
        (1, "StepStarted"), (2, "StepStarted"),
    ]


async def test_wrong_expected_version_when_ahead_creates_no_gap(raw_store: EventStore, tenant: str):
    stream, run_id = run_stream()
    meta = Metadata(tenant_id=tenant)

    with pytest.raises(WrongExpectedVersion) as err:  # a stream that does not exist yet is at version 0
        await raw_store.append(stream, 1, steps(run_id, 1), metadata=meta)
    assert (err.value.expected, err.value.actual) == (1, 0)
    assert await table_rows(raw_store.pool, tenant) == []

    await raw_store.append(stream, 0, steps(run_id, 2), metadata=meta)
    for ahead in (3, 10):
        with pytest.raises(WrongExpectedVersion) as err:
            await raw_store.append(stream, ahead, steps(run_id, 2, "x"), metadata=meta)
        assert (err.value.expected, err.value.actual) == (ahead, 2)

    out = await raw_store.append(stream, 2, steps(run_id, 1, "next"), metadata=meta)
    assert out.version == 3
    assert [r["version"] for r in await table_rows(raw_store.pool, tenant)] == [1, 2, 3]


async def test_concurrent_appends_at_the_same_version_one_wins(raw_store: EventStore, tenant: str):
    stream, run_id = run_stream()
    meta = Metadata(tenant_id=tenant)
    await raw_store.append(stream, 0, steps(run_id, 1), metadata=meta)

    results = await asyncio.gather(
        *(raw_store.append(stream, 1, steps(run_id, 2, f"w{i}-"), metadata=meta) for i in range(8)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, Outcome)]
    losses = [r for r in results if isinstance(r, WrongExpectedVersion)]
    assert len(wins) == 1 and len(losses) == 7, results
    assert all(e.actual == 3 for e in losses)
    assert [r["version"] for r in await table_rows(raw_store.pool, tenant)] == [1, 2, 3]


async def test_a_stream_id_taken_by_another_tenant_is_a_conflict_not_an_error(raw_store: EventStore, tenant: str):
    stream, run_id = run_stream()
    await raw_store.append(stream, 0, steps(run_id, 1), metadata=Metadata(tenant_id=tenant))
    other = f"t{uuid.uuid4().hex[:12]}"  # sees no such stream (row-level security), so appends at version 0
    with pytest.raises(WrongExpectedVersion) as err:
        await raw_store.append(stream, 0, steps(run_id, 1, "theirs"), metadata=Metadata(tenant_id=other))
    assert (err.value.expected, err.value.actual) == (0, -1)
    assert await table_rows(raw_store.pool, other) == []


async def test_an_append_whose_transaction_is_older_than_the_previous_event_writes_nothing(
    raw_store: EventStore, tenant: str
):
    """Within a stream, (xid, position) order must be version order for global-order readers: a transaction
    that took its id before the previous version's writer took its own may not append after it."""
    stream, run_id = run_stream()
    meta = Metadata(tenant_id=tenant)
    async with raw_store.transaction(tenant) as early:
        older = await early.conn.fetchval("SELECT pg_current_xact_id()")  # this transaction's id, taken now
        first, _ = await raw_store.append_recorded(stream, 0, steps(run_id, 1), metadata=meta)  # commits
        with pytest.raises(WrongExpectedVersion) as err:
            await early.append_recorded(stream, 1, steps(run_id, 1, "late"), metadata=meta)
        assert (err.value.expected, err.value.actual) == (1, 1)  # a conflict to retry, not a version mismatch
    recorded = await raw_store.read_stream(tenant, stream)
    assert [r.version for r in recorded] == [1] and recorded[0].xid > older
    _, again = await raw_store.append_recorded(stream, 1, steps(run_id, 1, "retry"), metadata=meta)
    assert again[0].cursor > recorded[0].cursor


# --- idempotent commands ---------------------------------------------------------------------------


async def test_same_command_id_appends_once_and_returns_the_first_outcome(raw_store: EventStore, tenant: str):
    stream, run_id = run_stream()
    command_id = uuid.uuid4()
    meta = Metadata(tenant_id=tenant, command_id=str(command_id), correlation_id="c1")
    first_batch = steps(run_id, 3, "first")

    first = await raw_store.append(stream, 0, first_batch, metadata=meta, status=201)
    assert first == Outcome(command_id=command_id, status=201, stream_id=stream, version=3)

    # A redelivery of the very same command.
    with pytest.raises(CommandAlreadyProcessed) as again:
        await raw_store.append(stream, 0, first_batch, metadata=meta, status=201)
    assert again.value.outcome == first

    # The same command id with arguments that would otherwise succeed (expected version now correct,
    # different events and status): still nothing appended, still the first outcome.
    with pytest.raises(CommandAlreadyProcessed) as again:
        await raw_store.append(stream, 3, steps(run_id, 2, "second"), metadata=meta, status=202)
    assert again.value.outcome == first

    assert await raw_store.outcome(tenant, command_id) == first
    assert await raw_store.record_outcome(tenant, Outcome(command_id=command_id, status=409)) == first

    rows = await table_rows(raw_store.pool, tenant)
    decoder = msgspec.json.Decoder(StepStarted)
    assert [(r["stream_id"], r["version"]) for r in rows] == [(stream, 1), (stream, 2), (stream, 3)]
    assert [decoder.decode(r["data"]) for r in rows] == first_batch
    assert await raw_store.pool.fetchval(
        "SELECT count(*) FROM processed_commands WHERE command_id = $1", command_id
    ) == 1


async def test_concurrent_deliveries_of_one_command_append_once(raw_store: EventStore, tenant: str):
    command_id = uuid.uuid4()
    meta = Metadata(tenant_id=tenant, command_id=str(command_id))
    # Different streams, so only the command id (not the expected version) can stop the duplicates.
    targets = [run_stream() for _ in range(6)]
    results = await asyncio.gather(
        *(raw_store.append(s, 0, steps(r, 2), metadata=meta) for s, r in targets), return_exceptions=True
    )
    wins = [r for r in results if isinstance(r, Outcome)]
    dups = [r for r in results if isinstance(r, CommandAlreadyProcessed)]
    assert len(wins) == 1 and len(dups) == 5, results
    assert all(d.outcome == wins[0] for d in dups)
    rows = await table_rows(raw_store.pool, tenant)
    assert [(r["stream_id"], r["version"]) for r in rows] == [(wins[0].stream_id, 1), (wins[0].stream_id, 2)]


async def test_refused_command_recorded_without_events_is_not_appended_later(raw_store: EventStore, tenant: str):
    stream, run_id = run_stream()
    command_id = uuid.uuid4()
    refused = Outcome(command_id=command_id, status=409, error="duplicate name", field="name")
    assert await raw_store.record_outcome(tenant, refused) == refused
    with pytest.raises(CommandAlreadyProcessed) as again:
        await raw_store.append(stream, 0, steps(run_id, 1), metadata=Metadata(tenant_id=tenant, command_id=str(command_id)))
    assert again.value.outcome == refused
    assert await table_rows(raw_store.pool, tenant) == []


# --- append-only, enforced by the database -----------------------------------------------------------


async def _refused_and_rolled_back(conn: asyncpg.Connection, sql: str, *args, match: str) -> None:
    """Run a destructive statement in a transaction that is always rolled back: if the protection were
    missing, the test fails without damaging the shared database."""
    tx = conn.transaction()
    await tx.start()
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=match):
            await conn.execute(sql, *args)
    finally:
        await tx.rollback()


async def test_update_delete_truncate_fail_for_the_superuser(raw_store: EventStore, tenant: str):
    stream, run_id = run_stream()
    await raw_store.append(stream, 0, steps(run_id, 2), metadata=Metadata(tenant_id=tenant))
    before = await table_rows(raw_store.pool, tenant)
    position = before[0]["global_position"]

    async with raw_store.pool.acquire() as conn:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        await _refused_and_rolled_back(
            conn, "UPDATE events SET type = 'Forged' WHERE global_position = $1", position, match="append-only: UPDATE"
        )
        await _refused_and_rolled_back(
            conn, "DELETE FROM events WHERE global_position = $1", position, match="append-only: DELETE"
        )
        await _refused_and_rolled_back(conn, "DELETE FROM events WHERE tenant_id = $1", tenant, match="append-only")
        await _refused_and_rolled_back(conn, "TRUNCATE events", match="append-only: TRUNCATE")

    assert await table_rows(raw_store.pool, tenant) == before


async def test_update_delete_truncate_fail_for_the_app_role(raw_store: EventStore, tenant: str):
    stream, run_id = run_stream()
    await raw_store.append(stream, 0, steps(run_id, 2), metadata=Metadata(tenant_id=tenant))
    before = await table_rows(raw_store.pool, tenant)

    for sql in (
        "UPDATE events SET type = 'Forged' WHERE stream_id = $1",
        "DELETE FROM events WHERE stream_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table events"):
            async with raw_store.tenant_transaction(tenant) as conn:
                assert await conn.fetchval("SELECT current_user") == raw_store.app_role
                # The row is visible to this tenant, so only the missing grant stops the statement.
                assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", stream) == 2
                await conn.execute(sql, stream)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table events"):
        async with raw_store.tenant_transaction(tenant) as conn:
            await conn.execute("TRUNCATE events")

    assert await table_rows(raw_store.pool, tenant) == before


# --- row-level security -------------------------------------------------------------------------------


async def test_row_level_security_limits_an_unfiltered_select_to_the_tenant(raw_store: EventStore, tenant: str):
    other = f"t{uuid.uuid4().hex[:12]}"
    other_streams = []
    for t, n in ((tenant, 3), (other, 5)):
        s, r = run_stream()
        await raw_store.append(s, 0, steps(r, n), metadata=Metadata(tenant_id=t))
        other_streams.append(s)
        s, r = run_stream()
        await raw_store.append(s, 0, steps(r, 1), metadata=Metadata(tenant_id=t))

    async with raw_store.tenant_transaction(tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == 4
        assert await conn.fetchval("SELECT count(DISTINCT tenant_id) FROM events") == 1
        assert await conn.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", other) == 0
        assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", other_streams[1]) == 0
    async with raw_store.tenant_transaction(other) as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == 6
    # The superuser (system readers) sees both.
    assert await raw_store.pool.fetchval(
        "SELECT count(*) FROM events WHERE tenant_id = ANY($1::text[])", [tenant, other]
    ) == 10


async def test_row_level_security_refuses_writing_into_another_tenant(raw_store: EventStore, tenant: str):
    other = f"t{uuid.uuid4().hex[:12]}"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with raw_store.tenant_transaction(tenant) as conn:
            await conn.execute(
                "INSERT INTO events (event_id, stream_id, version, type, data, metadata, tenant_id)"
                " VALUES ($1, 'run-x', 1, 'StepStarted', '{}', '{}', $2)",
                uuid.uuid4(),
                other,
            )
    assert await table_rows(raw_store.pool, other) == []


# --- gap-safe global reads ----------------------------------------------------------------------------


class ChaosProjector:
    """Runs inside each append transaction, after the insert: holds some open, rolls some back."""

    def __init__(self) -> None:
        self.hold: dict[str, float] = {}  # stream id -> seconds to keep the transaction open
        self.fail: set[str] = set()  # stream ids whose append transaction raises (rolled back)
        self.holding = asyncio.Event()  # set while a slow writer holds inserted, uncommitted rows
        self.doomed_positions: list[int] = []  # positions taken by transactions that rolled back

    async def __call__(self, conn: asyncpg.Connection, recorded: Sequence[RecordedEvent]) -> None:
        stream = recorded[0].stream_id
        if stream in self.hold:
            self.holding.set()
            try:
                await asyncio.sleep(self.hold[stream])
            finally:
                self.holding.clear()
        if stream in self.fail:
            self.doomed_positions.extend(r.global_position for r in recorded)
            raise RuntimeError(f"rollback on purpose: {stream}")


async def test_global_reads_see_every_committed_event_once_in_order(pool, settings, tenant: str):
    chaos = ChaosProjector()
    store = EventStore(pool, app_role=settings.db_app_role, projector=chaos)
    committed: set[tuple[str, int]] = set()  # (stream, version) of every successful append
    doomed_streams: set[str] = set()
    stop = asyncio.Event()
    rng = random.Random(1234)

    async def append(stream: str, run_id: uuid.UUID, expected: int, n: int, *, as_command: bool = False) -> int:
        events = steps(run_id, n, f"v{expected}-")
        if as_command:  # as handle_command appends: load, then the command record, then the events
            command_id = str(uuid.uuid4())
            async with store.transaction(tenant) as tx:
                await tx.load(stream, uuid.UUID(command_id))
                await tx.append_recorded(stream, expected, events,
                                         metadata=Metadata(tenant_id=tenant, command_id=command_id))
        else:
            await store.append(stream, expected, events, metadata=Metadata(tenant_id=tenant))
        committed.update((stream, expected + i + 1) for i in range(n))
        return expected + n

    async def fast_writer(as_command: bool) -> None:
        stream, run_id = run_stream()
        version = 0
        while not stop.is_set():
            version = await append(stream, run_id, version, rng.randint(1, 3), as_command=as_command)
            await asyncio.sleep(rng.uniform(0, 0.01))

    async def slow_writer(hold_s: float) -> None:
        stream, run_id = run_stream()
        await asyncio.sleep(0.3)  # let the fast writers get going first
        version = await append(stream, run_id, 0, 1)
        chaos.hold[stream] = hold_s  # the next append inserts, then holds its transaction open
        version = await append(stream, run_id, version, 2)
        del chaos.hold[stream]
        await append(stream, run_id, version, 1)

    async def rolled_back_writer() -> None:
        """Appends that take positions and then roll back: via the projector, and by hand."""
        while not stop.is_set():
            stream, run_id = run_stream()
            doomed_streams.add(stream)
            chaos.fail.add(stream)
            with pytest.raises(RuntimeError, match="rollback on purpose"):
                await store.append(stream, 0, steps(run_id, 2), metadata=Metadata(tenant_id=tenant))
            stream, run_id = run_stream()
            doomed_streams.add(stream)
            with pytest.raises(RuntimeError, match="by hand"):
                async with store.transaction(tenant) as tx:  # _insert alone: no command record
                    rec = await tx._insert(stream, 0, steps(run_id, 1), Metadata(tenant_id=tenant))
                    chaos.doomed_positions.extend(r.global_position for r in rec)
                    await asyncio.sleep(rng.uniform(0, 0.2))
                    raise RuntimeError("rolled back by hand")
            await asyncio.sleep(rng.uniform(0, 0.05))

    async def slow_rolled_back_writer() -> None:
        """Holds its inserted rows for a second while others commit, then rolls back."""
        stream, run_id = run_stream()
        doomed_streams.add(stream)
        chaos.hold[stream] = 1.0
        chaos.fail.add(stream)
        await asyncio.sleep(0.5)
        with pytest.raises(RuntimeError, match="rollback on purpose"):
            await store.append(stream, 0, steps(run_id, 2), metadata=Metadata(tenant_id=tenant))

    seen: list[RecordedEvent] = []
    reader_conn = await asyncpg.connect(settings.database_url)  # superuser: a system reader
    # Start after the newest event: every event of this test has a higher transaction id.
    checkpoint = await cursor_at(reader_conn, await reader_conn.fetchval(
        "SELECT coalesce(max(global_position), 0) FROM events"))
    reads_while_held = 0

    async def drain() -> int:
        nonlocal checkpoint
        got = 0
        while chunk := await read_all(reader_conn, checkpoint, 50):
            seen.extend(r for r in chunk if r.tenant_id == tenant)
            checkpoint = chunk[-1].cursor  # as the relay does: resume after the last seen
            got += len(chunk)
        return got

    async def reader() -> None:
        nonlocal reads_while_held
        while not stop.is_set():
            await drain()
            if chaos.holding.is_set():
                reads_while_held += 1
            await asyncio.sleep(0.005)

    started = time.monotonic()
    try:
        reader_task = asyncio.create_task(reader())
        writers = [asyncio.create_task(fast_writer(as_command=i % 2 == 1)) for i in range(4)]
        writers.append(asyncio.create_task(rolled_back_writer()))
        slow = [asyncio.create_task(slow_writer(2.5)), asyncio.create_task(slow_rolled_back_writer())]
        await asyncio.wait_for(asyncio.gather(*slow), 15)
        await asyncio.sleep(0.3)  # a little more traffic after the slow writers committed
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers, reader_task), 10)
        await drain()  # whatever committed last
    finally:
        stop.set()
        await reader_conn.close()
    elapsed = time.monotonic() - started

    keys = [(r.stream_id, r.version) for r in seen]
    positions = [r.global_position for r in seen]
    cursors = [r.cursor for r in seen]
    in_table = {(r["stream_id"], r["version"]) for r in await table_rows(pool, tenant)}

    assert elapsed < 20, elapsed
    assert reads_while_held > 0, "the reader never polled while a writer held its transaction open"
    assert len(committed) > 50 and len(chaos.doomed_positions) > 5, (len(committed), chaos.doomed_positions)
    assert in_table == committed  # the rolled-back writers left nothing behind
    assert not {s for s, _ in keys} & doomed_streams, "the reader saw rolled-back events"
    assert len(keys) == len(set(keys)), "the reader saw an event twice"
    assert cursors == sorted(cursors), "the reader saw (xid, position) pairs out of order"
    missed = committed - set(keys)
    assert not missed, f"the reader skipped {len(missed)} committed events, e.g. {sorted(missed)[:5]}"
    assert set(keys) == committed
    by_stream: dict[str, list[int]] = {}
    for stream, version in keys:
        by_stream.setdefault(stream, []).append(version)
    assert all(v == list(range(1, len(v) + 1)) for v in by_stream.values()), "a stream's versions out of order"
    assert not set(chaos.doomed_positions) & set(positions)
