"""Spent approval-link tokens: written by the decision's projection, inside the decision's append."""

from __future__ import annotations

import uuid

import asyncpg

from libs.events.errors import DomainError
from libs.events.store import RecordedEvent


async def consume_token(conn: asyncpg.Connection, rec: RecordedEvent, token_id: uuid.UUID, kind: str) -> None:
    """Spend a token in the transaction appending its decision. A second use (even one racing this one:
    the primary key makes it wait for our commit) finds the row and its whole append is refused."""
    spent = await conn.fetchval(
        "INSERT INTO approval_tokens_used (id, tenant_id, kind, stream_id, used_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING true",
        token_id, rec.tenant_id, kind, rec.stream_id, rec.recorded_at,
    )
    if not spent:
        raise DomainError(400, "This approval link was already used (reused token)", "token")
