"""The event store: append with expected version, idempotent commands (global-order reads: libs/events/order.py)."""

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
    xid: int = 0  # the writing transaction's id (xid8): with global_position, the global order's key

    @property
    def cursor(self) -> tuple[int, int]:
        """Where a global-order reader resumes after this event: (xid, global_position)."""
        return self.xid, self.global_position

    @property
    def category(self) -> str:
        return self.stream_id.split("-", 1)[0]


Projector = Callable[[asyncpg.Connection, Sequence[RecordedEvent]], Awaitable[None]]


def row_to_recorded(row: asyncpg.Record) -> RecordedEvent:
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
        xid=row["xid"],
    )


SELECT_EVENTS = (
    "SELECT global_position, event_id, stream_id, version, type, data::text AS data,"
    " metadata::text AS metadata, tenant_id, recorded_at, xid FROM events"
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
                SELECT_EVENTS + " WHERE tenant_id = $1 AND stream_id = $2 AND version <= $3 AND version > $4"
                " ORDER BY version",
                tenant_id,
                stream_id,
                to_version if to_version is not None else 2**31 - 1,
                after_version,
            )
        return [row_to_recorded(r) for r in rows]

    @asynccontextmanager
    async def transaction(self, tenant_id: str) -> AsyncIterator[StoreTransaction]:
        """One tenant transaction for several store operations (load, decide, append: one commit, fewer round
        trips)."""
        async with tenant_transaction(self.pool, tenant_id, self.app_role) as conn:
            yield StoreTransaction(self, conn, tenant_id)

    async def append(self, stream_id: str, expected_version: int, events: Sequence[Event], **options: Any) -> Outcome:
        """append_recorded(...) without the recorded events: the outcome only. Same keyword options."""
        outcome, _ = await self.append_recorded(stream_id, expected_version, events, **options)
        return outcome

    async def append_recorded(
        self, stream_id: str, expected_version: int, events: Sequence[Event], *, metadata: Metadata, **options: Any
    ) -> tuple[Outcome, list[RecordedEvent]]:
        """StoreTransaction.append_recorded in a transaction of its own (same keyword options)."""
        async with self.transaction(metadata.tenant_id) as tx:
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
    " e.tenant_id, e.recorded_at, e.xid"
    " FROM (SELECT (SELECT outcome::text FROM processed_commands WHERE command_id = $3) AS outcome) AS o"
    " LEFT JOIN LATERAL (SELECT global_position, event_id, stream_id, version, type, data::text AS data,"
    " metadata::text AS metadata, tenant_id, recorded_at, xid FROM events WHERE tenant_id = $1 AND stream_id = $2) AS e"
    " ON o.outcome IS NULL ORDER BY e.version"
)
# The command record.
_RECORD_COMMAND = (
    "INSERT INTO processed_commands (command_id, tenant_id, outcome) VALUES ($1, $2, $3::jsonb)"
    " ON CONFLICT (command_id) DO NOTHING RETURNING true"
)


class StoreTransaction:
    """The store's operations inside one open tenant transaction (EventStore.transaction)."""

    def __init__(self, store: EventStore, conn: asyncpg.Connection, tenant_id: str) -> None:
        self.store, self.conn, self.tenant_id = store, conn, tenant_id

    async def load(self, stream_id: str, command_id: uuid.UUID) -> tuple[Outcome | None, list[RecordedEvent]]:
        """A command's recorded outcome (None if it is new) and, when new, its stream's events."""
        rows = await self.conn.fetch(_LOAD, self.tenant_id, stream_id, command_id)
        if rows[0]["outcome"] is not None:
            return _outcome_decoder.decode(rows[0]["outcome"]), []
        return None, [row_to_recorded(r) for r in rows if r["global_position"] is not None]

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
        # No lock: appends to different streams commit in parallel. Global-order readers read (xid,
        # global_position) below pg_snapshot_xmin (read_all; docs/decisions/0032). UNIQUE(stream_id, version)
        # is the arbiter between concurrent appends to one stream (_insert).
        if metadata.command_id:
            await self.record_command(outcome)
        conn = self.conn
        if not events:
            await self._check_version(stream_id, expected_version)
            await set_timers(conn, tenant_id, timers)
            return outcome, []
        recorded = await self._insert(stream_id, expected_version, events, metadata)
        if not recorded:
            # Nothing (or, after a conflict, not everything) was written: another append got there first (its
            # rows are visible now: ON CONFLICT waited for its commit), or the stream id is another tenant's
            # (invisible under row-level security), or the previous event's transaction id is above ours.
            await self._check_version(stream_id, expected_version)
            raise WrongExpectedVersion(stream_id, expected_version, -1 if expected_version == 0 else expected_version)
        if self.store.projector is not None:
            await self.store.projector(conn, recorded)
        await set_timers(conn, tenant_id, timers)
        return outcome, recorded

    async def record_command(self, outcome: Outcome) -> None:
        """Record a command's outcome; CommandAlreadyProcessed with the first outcome when it was recorded
        before. Concurrent deliveries of one command block on the primary key until the first commits."""
        encoded = msgspec.json.encode(outcome).decode()
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
            # exactly at expected_version as of this statement's snapshot. Two appends that both pass it race
            # on UNIQUE(stream_id, version): the second waits for the first to commit, then writes nothing
            # (ON CONFLICT), and the caller sees WrongExpectedVersion.
            " WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $2) = $3"
            # Within a stream, (xid, global_position) order must be version order, or a global-order reader
            # would see version N+1 before N. Our xid is normally taken by this statement (or after the load
            # that showed version N), so it is above the xid of N's transaction, which committed before that
            # snapshot. If this transaction took its xid earlier than that, it writes nothing and is retried
            # (a new transaction, a new, higher xid).
            " AND coalesce((SELECT xid FROM events WHERE stream_id = $2 AND version = $3), '0')"
            " < pg_current_xact_id()"
            " ORDER BY e.n ON CONFLICT (stream_id, version) DO NOTHING RETURNING global_position, version,"
            " recorded_at, xid",
            ids,
            stream_id,
            expected_version,
            meta_json,
            metadata.tenant_id,
            types,
            [d.decode() for d in datas],
        )
        if len(rows) != len(events):  # a conflict: the transaction is rolled back (WrongExpectedVersion)
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
                xid=by_version[expected_version + i + 1]["xid"],
            )
            for i in range(len(events))
        ]
