"""API keys for the public API: generation, hashing, the one-round-trip admission check, settings, quota.

A key is `weft_` + 64 random hex characters (256 bits). Only sha256(key) is stored: with that much
entropy a slow password hash would add latency and no protection. The key alone names its tenant, so the
admission lookup runs before any tenant is known, through a narrow SECURITY DEFINER function (migration 026,
docs/decisions/0115) that the gateway's app login may call; everything else runs in a tenant transaction
under row-level security.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from libs.security.ratelimit import Decision, Limit, decision_of

PREFIX = "weft_"
KEY_RE = re.compile(r"^weft_[0-9a-f]{64}$")
# The contract's numbers (spec D): burst 10, refill 1 per second, 1000 executions per key per month.
DEFAULT_BURST = 10
DEFAULT_PER_MINUTE = 60
DEFAULT_MONTHLY_LIMIT = 1000
MAX_NAME = 200
MAX_WORKFLOWS = 100
# Bounds of expires_at (docs/decisions/0051): no key lives longer than MAX_LIFETIME, and no date before
# EARLIEST is stored (year 1 stored fine but broke every later read of the tenant's keys).
MAX_LIFETIME = timedelta(days=3660)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


class InvalidKeySetting(ValueError):
    """A key setting breaks a rule; `field` names it (the admin API answers 400 with it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Admission(msgspec.Struct, frozen=True, kw_only=True):
    """What one request's key check found: the key, whether it may be used, and the rate-limit decision."""

    key_id: uuid.UUID
    tenant_id: str
    name: str
    workflow_ids: tuple[str, ...]
    active: bool
    expired: bool
    rate: Decision


def generate_key() -> str:
    return PREFIX + secrets.token_hex(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def hint_of(key: str) -> str:
    return key[: len(PREFIX) + 6] + "..."


def bucket_of(key_id: uuid.UUID) -> str:
    """The key's row in rate_buckets (weft_admit_api_key, migration 026, builds the same name in SQL)."""
    return f"key:{key_id}"


# Key lookup and the key's token bucket in one call: one round trip per request (docs/decisions/0008). The
# function (migration 026) runs as its owner, so the gateway's app login finds a key before any tenant is
# known, and only by the hash of the whole key: it answers one key or nothing, never a list (0115).
# Only a found key touches a bucket; its limit comes from its row, so a changed setting applies at once.
_ADMIT_SQL = "SELECT * FROM weft_admit_api_key($1, $2::bigint)"


async def admit(pool: asyncpg.Pool, key: str, now_us: int | None = None, timeout_s: float = 2.0) -> Admission | None:
    """The key's record and a token taken from its bucket, or None for a malformed or unknown key
    (answered without a query when malformed). Every request of a known key draws on its bucket, whatever
    the key's state, so every response to it carries the rate-limit headers."""
    if not KEY_RE.match(key):
        return None
    row = await pool.fetchrow(_ADMIT_SQL, hash_key(key), now_us, timeout=timeout_s)
    if row is None:
        return None
    return Admission(
        key_id=row["id"], tenant_id=row["tenant_id"], name=row["name"], workflow_ids=tuple(row["workflow_ids"]),
        active=row["active"], expired=row["expired"],
        rate=decision_of(row, Limit(burst=row["rate_burst"], per_minute=row["rate_per_minute"])),
    )


# -- settings ------------------------------------------------------------------------------------------------


def _check_settings(*, name: Any = None, workflow_ids: Any = None, monthly_limit: Any = None, burst: Any = None,
                    per_minute: Any = None, expires_at: Any = None, present: Sequence[str] = ()) -> None:
    if "name" in present and (not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_NAME
                              or not name.isprintable()):
        raise InvalidKeySetting("name", f"name must be 1-{MAX_NAME} printable characters")
    if "workflow_ids" in present:
        if not isinstance(workflow_ids, (list, tuple)) or not 1 <= len(workflow_ids) <= MAX_WORKFLOWS:
            raise InvalidKeySetting("workflow_ids", f"workflow_ids must list 1-{MAX_WORKFLOWS} workflow ids")
        for wid in workflow_ids:
            if not isinstance(wid, uuid.UUID):
                raise InvalidKeySetting("workflow_ids", f"workflow_ids: {wid!r} is not a workflow id (uuid)")
    if "monthly_limit" in present and monthly_limit is not None and (
            isinstance(monthly_limit, bool) or not isinstance(monthly_limit, int) or not 0 <= monthly_limit <= 10**9):
        raise InvalidKeySetting("monthly_limit", "monthly_limit must be an integer 0-1000000000, or null for none")
    if "burst" in present and (isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 10**6):
        raise InvalidKeySetting("rate_limit.burst", "rate_limit.burst must be an integer 1-1000000")
    if "per_minute" in present and (isinstance(per_minute, bool) or not isinstance(per_minute, int)
                                    or not 1 <= per_minute <= 6 * 10**7):
        raise InvalidKeySetting("rate_limit.per_minute", "rate_limit.per_minute must be an integer 1-60000000")
    if "expires_at" in present and expires_at is not None:
        if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
            raise InvalidKeySetting("expires_at", "expires_at must be a timestamp with a time zone, or null")
        latest = datetime.now(UTC) + MAX_LIFETIME
        try:
            in_range = EARLIEST <= expires_at <= latest
        except OverflowError:  # an offset that moves year 1 or 9999 out of range
            in_range = False
        if not in_range:
            raise InvalidKeySetting("expires_at", f"expires_at must be before {latest.date().isoformat()}"
                                    f" ({MAX_LIFETIME.days} days from now), or null")


def _check_future(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise InvalidKeySetting("expires_at", "expires_at is in the past: the key would be expired already")


def parse_workflow_ids(raw: Sequence[Any]) -> list[uuid.UUID]:
    ids = []
    for value in raw:
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            raise InvalidKeySetting("workflow_ids", f"workflow_ids: {value!r} is not a workflow id (uuid)") from None
    return list(dict.fromkeys(ids))


async def _check_workflows(conn: asyncpg.Connection, tenant_id: str, workflow_ids: Sequence[uuid.UUID]) -> None:
    found = {r["id"] for r in await conn.fetch(
        "SELECT id FROM workflows WHERE tenant_id = $1 AND id = ANY($2::uuid[])", tenant_id, list(workflow_ids))}
    missing = [str(w) for w in workflow_ids if w not in found]
    if missing:
        raise InvalidKeySetting("workflow_ids", f"no such workflow in tenant {tenant_id}: {', '.join(missing)}")


_COLUMNS = (
    "k.id, k.tenant_id, k.name, k.key_hint, k.workflow_ids::text[] AS workflow_ids, k.active, k.expires_at,"
    " k.monthly_limit, k.rate_burst, k.rate_per_minute, k.created_by, k.created_at, k.updated_at, k.rotated_at,"
    " coalesce((SELECT u.used FROM api_key_usage u WHERE u.key_id = k.id AND u.month = $2), 0) AS used_this_month"
)


def month_of(at: datetime) -> date:
    """The calendar month (UTC) a quota counts in, as its first day."""
    return at.astimezone(UTC).date().replace(day=1)


async def create_key(conn: asyncpg.Connection, *, tenant_id: str, name: str, workflow_ids: Sequence[uuid.UUID],
                     created_by: str, expires_at: datetime | None = None,
                     monthly_limit: int | None = DEFAULT_MONTHLY_LIMIT, burst: int = DEFAULT_BURST,
                     per_minute: int = DEFAULT_PER_MINUTE) -> tuple[str, asyncpg.Record]:
    """Create a key (conn inside the tenant's transaction); returns (the key, shown only now; its record)."""
    _check_settings(name=name, workflow_ids=workflow_ids, monthly_limit=monthly_limit, burst=burst,
                    per_minute=per_minute, expires_at=expires_at,
                    present=("name", "workflow_ids", "monthly_limit", "burst", "per_minute", "expires_at"))
    _check_future(expires_at)
    await _check_workflows(conn, tenant_id, workflow_ids)
    key, key_id = generate_key(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO api_keys (id, tenant_id, name, key_hash, key_hint, workflow_ids, expires_at, monthly_limit,"
        " rate_burst, rate_per_minute, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        key_id, tenant_id, name.strip(), hash_key(key), hint_of(key), list(workflow_ids), expires_at, monthly_limit,
        burst, per_minute, created_by,
    )
    return key, await get_key(conn, tenant_id, key_id)


async def get_key(conn: asyncpg.Connection, tenant_id: str, key_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_keys k WHERE k.tenant_id = $1 AND k.id = $3",
                               tenant_id, month_of(datetime.now(UTC)), key_id)


async def list_keys(conn: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys k WHERE k.tenant_id = $1 ORDER BY k.created_at, k.id",
                            tenant_id, month_of(datetime.now(UTC)))


_UPDATABLE = {"name": "name", "workflow_ids": "workflow_ids", "active": "active", "expires_at": "expires_at",
              "monthly_limit": "monthly_limit", "burst": "rate_burst", "per_minute": "rate_per_minute"}


async def update_key(conn: asyncpg.Connection, tenant_id: str, key_id: uuid.UUID, **changes: Any
                     ) -> asyncpg.Record | None:
    """Change settings (name, workflow_ids, active, expires_at, monthly_limit, burst, per_minute). They apply to
    the key's next request in every gateway: admission reads them from the row each time."""
    unknown = set(changes) - set(_UPDATABLE)
    if unknown:
        raise InvalidKeySetting(sorted(unknown)[0], f"unknown setting {sorted(unknown)[0]!r}")
    _check_settings(**{k: v for k, v in changes.items() if k != "active"}, present=tuple(changes))
    if "active" in changes and not isinstance(changes["active"], bool):
        raise InvalidKeySetting("active", "active must be true or false")
    if "workflow_ids" in changes:
        await _check_workflows(conn, tenant_id, changes["workflow_ids"])
    if "name" in changes:
        changes["name"] = changes["name"].strip()
    if changes:
        names = list(changes)
        sets = ", ".join(f"{_UPDATABLE[n]} = ${i + 3}" for i, n in enumerate(names))
        status = await conn.execute(
            f"UPDATE api_keys SET {sets}, updated_at = clock_timestamp() WHERE tenant_id = $1 AND id = $2",
            tenant_id, key_id, *[changes[n] for n in names])
        if status == "UPDATE 0":
            return None
    return await get_key(conn, tenant_id, key_id)


async def rotate_key(conn: asyncpg.Connection, tenant_id: str, key_id: uuid.UUID) -> tuple[str, asyncpg.Record] | None:
    """A new secret for the same key id: settings, quota, webhooks and visible executions stay; the old
    secret stops working with this commit."""
    key = generate_key()
    status = await conn.execute(
        "UPDATE api_keys SET key_hash = $3, key_hint = $4, rotated_at = clock_timestamp(),"
        " updated_at = clock_timestamp() WHERE tenant_id = $1 AND id = $2",
        tenant_id, key_id, hash_key(key), hint_of(key))
    if status == "UPDATE 0":
        return None
    return key, await get_key(conn, tenant_id, key_id)


async def delete_key(conn: asyncpg.Connection, tenant_id: str, key_id: uuid.UUID) -> bool:
    """Delete the key and its bucket. Its usage and execution records stay: runs it started still exist."""
    status = await conn.execute("DELETE FROM api_keys WHERE tenant_id = $1 AND id = $2", tenant_id, key_id)
    await conn.execute("DELETE FROM rate_buckets WHERE tenant_id = $1 AND bucket = $2", tenant_id, bucket_of(key_id))
    return status != "DELETE 0"


# -- the monthly execution quota ------------------------------------------------------------------------------


async def reserve_execution(conn: asyncpg.Connection, tenant_id: str, key_id: uuid.UUID, at: datetime) -> bool:
    """Count one execution against the key's current limit if it is below it. The conditional upsert holds
    the (key, month) row lock from the check to the increment, so the limit is never passed."""
    used = await conn.fetchval(
        "INSERT INTO api_key_usage AS u (tenant_id, key_id, month, used)"
        " SELECT $1, $2, $3, 1 FROM api_keys k WHERE k.id = $2 AND coalesce(k.monthly_limit > 0, true)"
        " ON CONFLICT (key_id, month) DO UPDATE SET used = u.used + 1"
        " WHERE u.used < coalesce((SELECT k.monthly_limit FROM api_keys k WHERE k.id = $2), 2147483647)"
        " RETURNING used",
        tenant_id, key_id, month_of(at))
    return used is not None


async def release_execution(conn: asyncpg.Connection, tenant_id: str, key_id: uuid.UUID, at: datetime) -> None:
    """Give back a reservation whose request started nothing (refused, unavailable, or a replayed request)."""
    await conn.execute("UPDATE api_key_usage SET used = used - 1 WHERE tenant_id = $1 AND key_id = $2"
                       " AND month = $3 AND used > 0", tenant_id, key_id, month_of(at))


async def record_execution(conn: asyncpg.Connection, tenant_id: str, key_id: uuid.UUID, run_id: uuid.UUID) -> bool:
    """Note that the key started run_id; False when it was noted before (the same run, requested again)."""
    status = await conn.execute(
        "INSERT INTO api_key_executions (tenant_id, key_id, run_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        tenant_id, key_id, run_id)
    return status == "INSERT 0 1"


async def started_by_key(conn: asyncpg.Connection, tenant_id: str, key_id: uuid.UUID, run_id: uuid.UUID) -> bool:
    return await conn.fetchval("SELECT true FROM api_key_executions WHERE tenant_id = $1 AND key_id = $2"
                               " AND run_id = $3", tenant_id, key_id, run_id) is not None
