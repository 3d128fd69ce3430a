"""Connected accounts at rest: sealed tokens per (tenant, user, provider), and a usable access token on demand
(refreshed shortly before it expires). The gateway (connect, status, refresh, disconnect) and the executor's
steps that call a provider's API both come through here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg
import msgspec

from libs.adapters import oauth
from libs.adapters.outbound import GuardedHttpClient

REFRESH_BEFORE = timedelta(seconds=120)  # an access token this close to expiry is refreshed before use


class Keyring(Protocol):
    """What seals tokens at rest (libs/security/secrets.py's SecretBox; adapters do not import security)."""

    def seal(self, plaintext: str, context: str) -> tuple[str, bytes]: ...

    def open(self, key_id: str, blob: bytes, context: str) -> str: ...


class Connection(msgspec.Struct, frozen=True, kw_only=True):
    """What may be shown about a connection: never its tokens."""

    provider: str
    account_email: str | None
    scopes: list[str]
    expires_at: datetime | None
    connected_at: datetime
    refreshed_at: datetime | None


class NotConnected(Exception):
    """The user has no usable connection to `provider` (never connected, revoked, or its refresh failed)."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"No usable {provider} connection: {reason}")
        self.provider, self.reason = provider, reason


def _context(tenant_id: str, user_id: str, provider: str, which: str) -> str:
    return f"{tenant_id}/{user_id}/{provider}/{which}"


async def save(conn: asyncpg.Connection, keyring: Keyring, tenant_id: str, user_id: str, provider: str,
               tokens: oauth.TokenSet, account_email: str | None = None, *, refreshed: bool = False) -> None:
    key_id, access = keyring.seal(tokens.access_token, _context(tenant_id, user_id, provider, "access"))
    refresh = None if tokens.refresh_token is None else keyring.seal(
        tokens.refresh_token, _context(tenant_id, user_id, provider, "refresh"))[1]
    await conn.execute(
        "INSERT INTO connections (tenant_id, user_id, provider, account_email, scopes, expires_at, key_id,"
        " access_token_enc, refresh_token_enc, instance_url)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " ON CONFLICT (tenant_id, user_id, provider) DO UPDATE SET"
        " account_email = coalesce(excluded.account_email, connections.account_email), scopes = excluded.scopes,"
        " expires_at = excluded.expires_at, key_id = excluded.key_id, access_token_enc = excluded.access_token_enc,"
        " refresh_token_enc = excluded.refresh_token_enc, instance_url = excluded.instance_url,"
        " connected_at = CASE WHEN $11 THEN connections.connected_at ELSE clock_timestamp() END,"
        " refreshed_at = CASE WHEN $11 THEN clock_timestamp() ELSE NULL END",
        tenant_id, user_id, provider, account_email, list(tokens.scopes), tokens.expires_at, key_id, access, refresh,
        tokens.instance_url, refreshed)


async def describe(conn: asyncpg.Connection, tenant_id: str, user_id: str) -> list[Connection]:
    rows = await conn.fetch("SELECT provider, account_email, scopes, expires_at, connected_at, refreshed_at"
                            " FROM connections WHERE tenant_id = $1 AND user_id = $2 ORDER BY provider",
                            tenant_id, user_id)
    return [Connection(**dict(r)) for r in rows]


async def load(conn: asyncpg.Connection, keyring: Keyring, tenant_id: str, user_id: str,
               provider: str) -> oauth.TokenSet | None:
    row = await conn.fetchrow(
        "SELECT scopes, expires_at, key_id, access_token_enc, refresh_token_enc, instance_url FROM connections"
        " WHERE tenant_id = $1 AND user_id = $2 AND provider = $3",
        tenant_id, user_id, provider)
    if row is None:
        return None
    refresh = row["refresh_token_enc"]
    return oauth.TokenSet(
        access_token=keyring.open(row["key_id"], row["access_token_enc"], _context(tenant_id, user_id, provider,
                                                                                   "access")),
        refresh_token=None if refresh is None else keyring.open(row["key_id"], refresh,
                                                                _context(tenant_id, user_id, provider, "refresh")),
        expires_at=row["expires_at"], scopes=tuple(row["scopes"]), instance_url=row["instance_url"])


async def delete(conn: asyncpg.Connection, tenant_id: str, user_id: str, provider: str) -> bool:
    return await conn.fetchval("DELETE FROM connections WHERE tenant_id = $1 AND user_id = $2 AND provider = $3"
                               " RETURNING true", tenant_id, user_id, provider) or False


def _fresh(tokens: oauth.TokenSet, now: datetime) -> bool:
    return tokens.expires_at is None or tokens.expires_at - now > REFRESH_BEFORE


async def usable(conn: asyncpg.Connection, keyring: Keyring, client: GuardedHttpClient, p: oauth.Provider,
                 tenant_id: str, user_id: str, *, force_refresh: bool = False,
                 now: datetime | None = None) -> oauth.TokenSet:
    """A token set whose access token is good for at least REFRESH_BEFORE, refreshed (and saved) if needed.

    Run it in a transaction: refreshes of one account are serialised, so two steps needing a refresh at once
    make one refresh call (the second finds the fresh token). By a transaction-scoped advisory lock, not a row
    lock: a row lock takes a transaction id at once, and every global-order reader (the relay, live feeds)
    waits below the oldest running one (docs/decisions/0032) for as long as the provider call takes. This
    transaction takes its id only when it saves the fresh tokens."""
    now = now or datetime.now(UTC)
    tokens = await load(conn, keyring, tenant_id, user_id, p.name)
    if tokens is None:
        raise NotConnected(p.name, "the account is not connected")
    if not force_refresh and _fresh(tokens, now):
        return tokens
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                       f"weft.connection:{tenant_id}:{user_id}:{p.name}")
    # Again, under the lock: a refresh that held it before us has committed its tokens by now.
    tokens = await load(conn, keyring, tenant_id, user_id, p.name)
    if tokens is None:
        raise NotConnected(p.name, "the account is not connected")
    if not force_refresh and _fresh(tokens, now):
        return tokens
    try:
        fresh = await oauth.refresh(client, p, tokens, now)
    except oauth.OAuthError as exc:
        if exc.permanent:
            raise NotConnected(p.name, f"refreshing its token failed ({exc.message}); connect it again") from None
        raise
    await save(conn, keyring, tenant_id, user_id, p.name, fresh, refreshed=True)
    return fresh
