"""The global order: how system readers (relay, rebuild) and the feeds follow every tenant's events without an
append lock, each event once, none skipped."""

from __future__ import annotations

import asyncpg

from libs.events.store import SELECT_EVENTS, RecordedEvent, row_to_recorded

# Global-order reads (docs/decisions/0032). A transaction takes its id (xid8) when it first writes and commits
# whenever it does, so neither global_position nor xid alone is commit order, and appends are not serialised.
# But every transaction whose xid is below pg_snapshot_xmin(pg_current_snapshot()) has ended: the set of events
# with such xids is final, nothing can commit among them later. So a reader that reads (xid, global_position)
# pairs above its cursor and below that bound, in pair order, never skips an event that commits late: the event
# is read once its writer's xid is below every running transaction's. (Within one stream, pair order is version
# order: see _insert.)
_READ_ALL = SELECT_EVENTS + (
    " WHERE (xid, global_position) > ($1::xid8, $2) AND xid < pg_snapshot_xmin(pg_current_snapshot())"
    " ORDER BY xid, global_position LIMIT $3"
)
# The event at a position (or, for a position that names none, the last one below it): a single-integer resume
# point (a checkpoint, a Weft-Position, an SSE id) becomes a cursor. Events are never deleted, so a position
# names the same (xid, position) for good.
_CURSOR_AT = "SELECT xid FROM events WHERE global_position <= $1 ORDER BY global_position DESC LIMIT 1"

# The same without the bound, for a reader inside one REPEATABLE READ snapshot (rebuild): nothing commits into a
# fixed snapshot, so keyset pages over it cannot skip anything, and the bound would wrongly leave out events that
# committed before the snapshot while an older transaction was still running.
_READ_SNAPSHOT = SELECT_EVENTS + " WHERE (xid, global_position) > ($1::xid8, $2) ORDER BY xid, global_position LIMIT $3"

Cursor = tuple[int, int]  # (xid, global_position): where a global-order reader resumes


async def read_all(conn: asyncpg.Connection, after: Cursor, limit: int) -> list[RecordedEvent]:
    """Events after a cursor, in global order, for system readers (relay, rebuild); resume from the last
    one's `.cursor`. Gap-safe without an append lock: see _READ_ALL."""
    rows = await conn.fetch(_READ_ALL, after[0], after[1], limit)
    return [row_to_recorded(r) for r in rows]


async def read_snapshot(conn: asyncpg.Connection, after: Cursor, limit: int) -> list[RecordedEvent]:
    """read_all for a connection inside a REPEATABLE READ transaction: every event its snapshot holds."""
    rows = await conn.fetch(_READ_SNAPSHOT, after[0], after[1], limit)
    return [row_to_recorded(r) for r in rows]


async def cursor_at(conn: asyncpg.Connection, position: int) -> Cursor:
    """The cursor that resumes after the event at `position` (0: from the start)."""
    if position <= 0:
        return 0, 0
    xid = await conn.fetchval(_CURSOR_AT, position)
    return (xid or 0), position
