"""The event store: append with expected version, idempotent commands, gap-safe global reads."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from libs.events.db import tenant_transaction
from libs.events.schemas import Event, Metadata, Outcome
from libs.events.timers import Timer, set_timers

# One constant key for the append lock (see `append`).
APPEND_LOCK_KEY = 0x5745_4654_0000_0001
NOTIFY_CHANNEL = "weft_events"

_outcome_decoder = msgspec.json.Decoder(Outcome)


class WrongExpectedVersion(Exception):
    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"{stream_id}: expected version {expected}, found {actual}")
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


class CommandAlreadyProcessed(Exception):
    """The command id was recorded before; nothing was appended. Carries the recorded outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"command {outcome.command_id} already processed")
        self.outcome = outcome


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    global_position: int
    event_id: uuid.UUID
    stream_id: str
    version: int
    type: str
    data: bytes
    metadata: dict[str, Any]
    tenant_id: str
    recorded_at: datetime
    event: Event | None = None  # set when the writer still holds the object; readers decode `data`

    @property
    def category(self) -> str:
        return self.stream_id.split("-", 1)[0]


Projector = Callable[[asyncpg.Connection, Sequence[RecordedEvent]], Awaitable[None]]


def _row_to_recorded(row: asyncpg.Record) -> RecordedEvent:
    return RecordedEvent(
        global_position=row["global_position"],
        event_id=row["event_id"],
        stream_id=row["stream_id"],
        version=row["version"],
        type=row["type"],
        data=row["data"].encode(),
        metadata=msgspec.json.decode(row["metadata"]),
        tenant_id=row["tenant_id"],
        recorded_at=row["recorded_at"],
    )


_SELECT = (
    "SELECT global_position, event_id, stream_id, version, type, data::text AS data,"
    " metadata::text AS metadata, tenant_id, recorded_at FROM events"
)


class EventStore:
    """Postgres-backed store. `projector` runs inside every append transaction (inline read models)."""

    def __init__(self, pool: asyncpg.Pool, *, app_role: str = "weft_app", projector: Projector | None = None):
        self.pool = pool
        self.app_role = app_role
        self.projector = projector

    def tenant_transaction(self, tenant_id: str):
        return tenant_transaction(self.pool, tenant_id, self.app_role)

    async def read_stream(
        self, tenant_id: str, stream_id: str, *, to_version: int | None = None, after_version: int = 0
    ) -> list[RecordedEvent]:
        """A stream's events in version order (those after `after_version` up to `to_version`); empty when
        missing or another tenant's."""
        async with self.tenant_transaction(tenant_id) as conn:
            rows = await conn.fetch(
                _SELECT + " WHERE tenant_id = $1 AND stream_id = $2 AND version <= $3 AND version > $4"
                " ORDER BY version",
                tenant_id,
                stream_id,
                to_version if to_version is not None else 2**31 - 1,
                after_version,
            )
        return [_row_to_recorded(r) for r in rows]

    @asynccontextmanager
    async def transaction(self, tenant_id: str, *, locked: bool = False) -> AsyncIterator[StoreTransaction]:
        """One tenant transaction for several store operations (load, decide, append: one commit, fewer round
        trips). With `locked` the append lock is taken in the BEGIN round trip; otherwise the first append
        takes it (see StoreTransaction.append_recorded)."""
        lock_key = APPEND_LOCK_KEY if locked else None
        async with tenant_transaction(self.pool, tenant_id, self.app_role, lock_key=lock_key) as conn:
            yield StoreTransaction(self, conn, tenant_id, locked=locked)

    async def append(self, stream_id: str, expected_version: int, events: Sequence[Event], **options: Any) -> Outcome:
        """append_recorded(...) without the recorded events: the outcome only. Same keyword options."""
        outcome, _ = await self.append_recorded(stream_id, expected_version, events, **options)
        return outcome

    async def append_recorded(
        self, stream_id: str, expected_version: int, events: Sequence[Event], *, metadata: Metadata, **options: Any
    ) -> tuple[Outcome, list[RecordedEvent]]:
        """StoreTransaction.append_recorded in a transaction of its own (same keyword options)."""
        async with self.transaction(metadata.tenant_id, locked=True) as tx:
            return await tx.append_recorded(stream_id, expected_version, events, metadata=metadata, **options)

    async def record_outcome(self, tenant_id: str, outcome: Outcome) -> Outcome:
        """Record a command that appended nothing (refused). Returns the first recorded outcome."""
        try:
            async with self.transaction(tenant_id) as tx:
                await tx.record_command(outcome)
        except CommandAlreadyProcessed as done:
            return done.outcome
        return outcome

    async def command_state(self, tenant_id: str, command_id: uuid.UUID) -> tuple[Outcome | None, bool]:
        """(the recorded outcome, whether the command was ever accepted), in one snapshot. The relay deletes a
        command-log row only after its outcome commits, so a snapshot that misses the row sees the outcome."""
        async with self.tenant_transaction(tenant_id) as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT outcome::text FROM processed_commands WHERE command_id = $1) AS outcome,"
                " EXISTS (SELECT 1 FROM command_log WHERE command_id = $1) AS logged", command_id)
        outcome = None if row["outcome"] is None else _outcome_decoder.decode(row["outcome"])
        return outcome, outcome is not None or row["logged"]

    async def outcome(self, tenant_id: str, command_id: uuid.UUID) -> Outcome | None:
        async with self.tenant_transaction(tenant_id) as conn:
            raw = await conn.fetchval(
                "SELECT outcome::text FROM processed_commands WHERE command_id = $1", command_id
            )
        return None if raw is None else _outcome_decoder.decode(raw)


# A command's outcome, and its stream's events unless it has one: one statement. With no events there is still
# one row (event columns null), which carries the outcome.
_LOAD = (
    "SELECT o.outcome, e.global_position, e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata,"
    " e.tenant_id, e.recorded_at"
    " FROM (SELECT (SELECT outcome::text FROM processed_commands WHERE command_id = $3) AS outcome) AS o"
    " LEFT JOIN LATERAL (SELECT global_position, event_id, stream_id, version, type, data::text AS data,"
    " metadata::text AS metadata, tenant_id, recorded_at FROM events WHERE tenant_id = $1 AND stream_id = $2) AS e"
    " ON o.outcome IS NULL ORDER BY e.version"
)
# The command record.
_RECORD_COMMAND = (
    "INSERT INTO processed_commands (command_id, tenant_id, outcome) VALUES ($1, $2, $3::jsonb)"
    " ON CONFLICT (command_id) DO NOTHING RETURNING true"
)
# The same, taking the append lock first when the transaction does not hold it yet: the insert's only row comes
# from the lock's CTE, so nothing is written before the lock is held. Later statements of the transaction take
# their snapshots after it (READ COMMITTED: one snapshot per statement), so the version check in _insert sees
# every append committed before ours (docs/decisions/0013).
_LOCK_AND_RECORD_COMMAND = (
    "WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock($4))"
    " INSERT INTO processed_commands (command_id, tenant_id, outcome) SELECT $1, $2, $3::jsonb FROM lock"
    " ON CONFLICT (command_id) DO NOTHING RETURNING true"
)


class StoreTransaction:
    """The store's operations inside one open tenant transaction (EventStore.transaction)."""

    def __init__(self, store: EventStore, conn: asyncpg.Connection, tenant_id: str, *, locked: bool) -> None:
        self.store, self.conn, self.tenant_id, self.locked = store, conn, tenant_id, locked

    async def load(self, stream_id: str, command_id: uuid.UUID) -> tuple[Outcome | None, list[RecordedEvent]]:
        """A command's recorded outcome (None if it is new) and, when new, its stream's events."""
        rows = await self.conn.fetch(_LOAD, self.tenant_id, stream_id, command_id)
        if rows[0]["outcome"] is not None:
            return _outcome_decoder.decode(rows[0]["outcome"]), []
        return None, [_row_to_recorded(r) for r in rows if r["global_position"] is not None]

    async def append_recorded(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        *,
        metadata: Metadata,
        status: int = 200,
        error: str | None = None,
        field: str | None = None,
        timers: Sequence[Timer] = (),
    ) -> tuple[Outcome, list[RecordedEvent]]:
        """Append events at expected_version + 1.. and return the outcome and the events as recorded.

        With metadata.command_id set, the command is recorded in the same transaction; a second call
        with that id appends nothing and raises CommandAlreadyProcessed with the first outcome.
        `timers` are set in the same transaction (libs/events/timers.py): an event that calls for a timer
        and its timer commit together or not at all. Any exception leaves the transaction to be rolled back.
        """
        tenant_id = metadata.tenant_id
        command_id = uuid.UUID(metadata.command_id) if metadata.command_id else uuid.uuid4()
        outcome = Outcome(
            command_id=command_id,
            status=status,
            stream_id=stream_id,
            version=expected_version + len(events),
            error=error,
            field=field,
        )
        # Appends are serialised by a transaction-scoped advisory lock (held until commit), so
        # global_position order is commit order: a reader that has seen position N can never later find a
        # committed event below N (no skipped late committers; see docs/decisions/0001-global-order.md).
        # Postgres releases transaction locks only after the commit is visible (CommitTransaction:
        # ProcArrayEndTransaction before ResourceOwnerRelease).
        if metadata.command_id:
            await self.record_command(outcome, take_lock=not self.locked)
            self.locked = True
        elif not self.locked:
            await self.conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)
            self.locked = True
        conn = self.conn
        if not events:
            await self._check_version(stream_id, expected_version)
            await set_timers(conn, tenant_id, timers)
            return outcome, []
        try:
            recorded = await self._insert(stream_id, expected_version, events, metadata)
        except asyncpg.UniqueViolationError as exc:
            # Only reachable when the stream id is taken by another tenant (invisible under RLS).
            raise WrongExpectedVersion(stream_id, expected_version, -1) from exc
        if not recorded:  # the guarded insert wrote nothing: the stream is not at expected_version
            await self._check_version(stream_id, expected_version)
            raise WrongExpectedVersion(stream_id, expected_version, expected_version)
        if self.store.projector is not None:
            await self.store.projector(conn, recorded)
        await set_timers(conn, tenant_id, timers)
        return outcome, recorded

    async def record_command(self, outcome: Outcome, *, take_lock: bool = False) -> None:
        """Record a command's outcome (taking the append lock first, in the same round trip, with `take_lock`);
        CommandAlreadyProcessed with the first outcome when it was recorded before. Concurrent deliveries of
        one command block on the primary key until the first commits."""
        encoded = msgspec.json.encode(outcome).decode()
        if take_lock:
            inserted = await self.conn.fetchval(
                _LOCK_AND_RECORD_COMMAND, outcome.command_id, self.tenant_id, encoded, APPEND_LOCK_KEY)
        else:
            inserted = await self.conn.fetchval(_RECORD_COMMAND, outcome.command_id, self.tenant_id, encoded)
        if not inserted:
            raw = await self.conn.fetchval(
                "SELECT outcome::text FROM processed_commands WHERE command_id = $1", outcome.command_id
            )
            raise CommandAlreadyProcessed(_outcome_decoder.decode(raw))

    async def _check_version(self, stream_id: str, expected_version: int) -> None:
        actual = await self.conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", stream_id)
        if actual != expected_version:
            raise WrongExpectedVersion(stream_id, expected_version, actual)

    async def _insert(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        metadata: Metadata,
    ) -> list[RecordedEvent]:
        ids = [uuid.uuid4() for _ in events]
        datas = [msgspec.json.encode(e) for e in events]
        types = [type(e).__name__ for e in events]
        meta_json = msgspec.json.encode(metadata).decode()
        rows = await self.conn.fetch(
            "INSERT INTO events (event_id, stream_id, version, type, data, metadata, tenant_id)"
            " SELECT e.id, $2, $3 + e.n, e.type, e.data::jsonb, $4::jsonb, $5"
            " FROM unnest($1::uuid[], $6::text[], $7::text[]) WITH ORDINALITY AS e(id, type, data, n)"
            # The expected-version check rides on the insert: no rows are written unless the stream is
            # exactly at expected_version (race-free under the append lock).
            " WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $2) = $3"
            " ORDER BY e.n RETURNING global_position, version, recorded_at",
            ids,
            stream_id,
            expected_version,
            meta_json,
            metadata.tenant_id,
            types,
            [d.decode() for d in datas],
        )
        if not rows:
            return []
        by_version = {r["version"]: r for r in rows}
        meta_dict = msgspec.to_builtins(metadata)
        return [
            RecordedEvent(
                global_position=by_version[expected_version + i + 1]["global_position"],
                event_id=ids[i],
                stream_id=stream_id,
                version=expected_version + i + 1,
                type=types[i],
                data=datas[i],
                metadata=meta_dict,
                tenant_id=metadata.tenant_id,
                recorded_at=by_version[expected_version + i + 1]["recorded_at"],
                event=events[i],
            )
            for i in range(len(events))
        ]


async def read_all(conn: asyncpg.Connection, after_position: int, limit: int) -> list[RecordedEvent]:
    """Events after a global position, in order, for system readers (relay, rebuild).

    Safe to checkpoint by position because appends are serialised (see EventStore.append).
    """
    rows = await conn.fetch(
        _SELECT + " WHERE global_position > $1 ORDER BY global_position LIMIT $2", after_position, limit
    )
    return [_row_to_recorded(r) for r in rows]
