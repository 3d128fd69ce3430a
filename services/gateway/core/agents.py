"""Agent definitions, tenant-scoped: what an `agent` step with `agent_id` calls (decision 0101).

Gateway state, not event-sourced (like API keys): rows of `agents` under forced row-level security. The auth
secret is sealed with libs/security/secrets.py, bound to the tenant and the agent's id, and never read back
out here: only the executor decrypts it, to call the endpoint.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import msgspec

from libs.security.auth import Principal
from libs.security.secrets import SecretBox, SecretsError
from services.gateway.core import Core
from services.gateway.core.errors import ApiError, NotFound

_COLUMNS = ("id, name, endpoint, timeout_s, prompt_template, secret_key_id IS NOT NULL AS has_secret,"
            " created_at, updated_at")


class Agent(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    endpoint: str
    timeout_s: float
    prompt_template: str | None
    has_secret: bool
    created_at: datetime
    updated_at: datetime


def secret_context(tenant_id: str, agent_id: uuid.UUID) -> bytes:
    """The associated data a secret is sealed with: it decrypts only in its own row."""
    return f"agent:{tenant_id}:{agent_id}".encode()


def check_endpoint(endpoint: str) -> None:
    try:
        url = httpx.URL(endpoint)
    except (httpx.InvalidURL, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ApiError(400, "endpoint must be an absolute http(s) URL", "endpoint")


def _seal(core: Core, tenant_id: str, agent_id: uuid.UUID, secret: str) -> tuple[str, bytes]:
    try:
        return SecretBox.from_settings(core.settings).seal(secret, secret_context(tenant_id, agent_id))
    except SecretsError as exc:  # a deployment setting, not the caller's mistake
        raise ApiError(503, f"Secrets cannot be stored: {exc}") from exc


async def _write(core: Core, principal: Principal, sql: str, *args: Any) -> asyncpg.Record | None:
    try:
        async with core.store.tenant_transaction(principal.tenant_id) as conn:
            return await conn.fetchrow(sql, *args)
    except asyncpg.UniqueViolationError:
        raise ApiError(409, "An agent with this name already exists", "name") from None


async def create(core: Core, principal: Principal, *, name: str, endpoint: str, secret: str | None,
                 timeout_s: float, prompt_template: str | None) -> Agent:
    check_endpoint(endpoint)
    agent_id = uuid.uuid4()
    key_id, sealed = _seal(core, principal.tenant_id, agent_id, secret) if secret else (None, None)
    row = await _write(core, principal,
                       "INSERT INTO agents (id, tenant_id, name, endpoint, timeout_s, prompt_template, secret_key_id,"
                       f" secret_ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_COLUMNS}",
                       agent_id, principal.tenant_id, name.strip(), endpoint, timeout_s, prompt_template, key_id,
                       sealed)
    return Agent(**dict(row))


async def get(core: Core, principal: Principal, agent_id: uuid.UUID) -> Agent:
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2",
                                  principal.tenant_id, agent_id)
    if row is None:
        raise NotFound("Agent")
    return Agent(**dict(row))


async def list_page(core: Core, principal: Principal, *, limit: int, offset: int) -> tuple[list[Agent], int]:
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM agents WHERE tenant_id = $1 ORDER BY lower(name), id"
                                " LIMIT $2 OFFSET $3", principal.tenant_id, limit, offset)
        total = await conn.fetchval("SELECT count(*) FROM agents WHERE tenant_id = $1", principal.tenant_id)
    return [Agent(**dict(r)) for r in rows], total


async def update(core: Core, principal: Principal, agent_id: uuid.UUID, changes: dict[str, Any]) -> Agent:
    """Apply the given fields; `secret` None removes the secret, a string replaces it."""
    await get(core, principal, agent_id)  # 404 first, whatever the body says
    if "endpoint" in changes:
        check_endpoint(changes["endpoint"])
    sets, args = [], [principal.tenant_id, agent_id]
    for column in ("name", "endpoint", "timeout_s", "prompt_template"):
        if column in changes:
            args.append(changes[column].strip() if column == "name" else changes[column])
            sets.append(f"{column} = ${len(args)}")
    if "secret" in changes:
        key_id, sealed = (_seal(core, principal.tenant_id, agent_id, changes["secret"]) if changes["secret"]
                          else (None, None))
        args += [key_id, sealed]
        sets += [f"secret_key_id = ${len(args) - 1}", f"secret_ciphertext = ${len(args)}"]
    sets.append("updated_at = clock_timestamp()")
    row = await _write(core, principal, f"UPDATE agents SET {', '.join(sets)} WHERE tenant_id = $1 AND id = $2"
                                        f" RETURNING {_COLUMNS}", *args)
    if row is None:
        raise NotFound("Agent")
    return Agent(**dict(row))


async def delete(core: Core, principal: Principal, agent_id: uuid.UUID) -> None:
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        deleted = await conn.fetchval("DELETE FROM agents WHERE tenant_id = $1 AND id = $2 RETURNING id",
                                      principal.tenant_id, agent_id)
    if deleted is None:
        raise NotFound("Agent")
