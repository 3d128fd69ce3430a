"""The command log's slow path: publish again every accepted command whose outcome is not recorded in time.

The gateway publishes a command right after its row in `command_log` commits (the fast path). If that publish
was lost (NATS down, its store wiped, the gateway killed in between), this publishes it again, with the same
Nats-Msg-Id (JetStream drops it within the duplicate window if the first one got through) and the same reply
inbox. Consumers record each command id with its outcome, so a second delivery appends nothing. Rows whose
outcome is recorded are deleted here, so the log holds only commands in flight (docs/decisions/0030).
"""

from __future__ import annotations


import asyncpg
import structlog
from nats.js import JetStreamContext

from libs.events.bus import COMMANDS_STREAM, REPLY_HEADER, confirmed

log = structlog.get_logger()
MAX_BACKOFF_S = 30.0

# Done: the outcome is recorded. Only rows that are due are looked at, so a command just accepted costs nothing.
_DELETE_DONE = (
    "DELETE FROM command_log c USING processed_commands p"
    " WHERE p.command_id = c.command_id"
    " AND coalesce(c.next_publish_at, c.accepted_at + make_interval(secs => $1)) <= clock_timestamp()"
)
_DUE = (
    "SELECT command_id, subject, payload, reply_to, attempts FROM command_log"
    " WHERE coalesce(next_publish_at, accepted_at + make_interval(secs => $1)) <= clock_timestamp()"
    " AND NOT EXISTS (SELECT 1 FROM processed_commands p WHERE p.command_id = command_log.command_id)"
    " ORDER BY accepted_at LIMIT $2"
)
# Next try after delay * 2^attempts, at most MAX_BACKOFF_S: a command whose service is down is not hammered.
_PUBLISHED = (
    "UPDATE command_log SET attempts = attempts + 1, next_publish_at = clock_timestamp()"
    " + make_interval(secs => least($2 * power(2, attempts), $3)) WHERE command_id = ANY($1::uuid[])"
)


class CommandRepublisher:
    def __init__(self, js: JetStreamContext, *, delay_s: float, batch: int = 256) -> None:
        self.js, self.delay_s, self.batch = js, delay_s, batch

    async def sweep(self, conn: asyncpg.Connection) -> int:
        """Delete what is done, publish again what is due; returns how many were published. A refused or
        missing PubAck raises (nats.errors.Error, TimeoutError): the rows stay due and are tried next sweep."""
        await conn.execute(_DELETE_DONE, self.delay_s)
        published = 0
        while True:
            rows = await conn.fetch(_DUE, self.delay_s, self.batch)
            if not rows:
                return published
            acks = [
                await self.js.publish_async(
                    r["subject"], r["payload"], stream=COMMANDS_STREAM, wait_stall=10.0,
                    headers={"Nats-Msg-Id": str(r["command_id"]),
                             **({REPLY_HEADER: r["reply_to"]} if r["reply_to"] else {})},
                )
                for r in rows
            ]
            await confirmed(acks)
            await conn.execute(_PUBLISHED, [r["command_id"] for r in rows], self.delay_s, MAX_BACKOFF_S)
            published += len(rows)
            log.info("commands_republished", count=len(rows), first_attempt=min(r["attempts"] for r in rows) == 0)
            if len(rows) < self.batch:
                return published
