"""Quick-action use cases (spec A): the built-in catalogue plus the tenant's own actions, each with the caller's
favorite flag and how many of the caller's commands were started from it; at most 20 favorites per user."""

from __future__ import annotations

import re

import msgspec

from libs.security.auth import Principal
from services.gateway.core import Core
from services.gateway.core.errors import ApiError, NotFound

MAX_FAVORITES = 20
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class QuickAction(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    title: str
    description: str
    template: str
    icon: str
    category: str


BUILT_IN: tuple[QuickAction, ...] = (
    QuickAction(id="send-email", title="Send Email", description="Compose and send an email",
                template="Send an email to {recipient} about {topic}", icon="mail", category="email"),
    QuickAction(id="summarize-unread", title="Summarize unread email",
                description="Summarise your unread emails and send the summary",
                template="Send a summary of my unread emails to {recipient}", icon="inbox", category="email"),
    QuickAction(id="create-doc", title="Create Document", description="Write a Google Doc from a prompt",
                template="Create a document about {topic}", icon="file-text", category="docs"),
    QuickAction(id="crm-report", title="CRM report", description="Query Salesforce and email a summary",
                template="Summarise the Salesforce opportunities closing this month and email {recipient}",
                icon="bar-chart", category="crm"),
)
_BUILT_IN_IDS = {a.id for a in BUILT_IN}


class Listed(msgspec.Struct, frozen=True, kw_only=True):
    action: QuickAction
    is_favorite: bool
    usage_count: int


async def catalogue(core: Core, tenant_id: str) -> list[QuickAction]:
    async with core.store.tenant_transaction(tenant_id) as conn:
        rows = await conn.fetch("SELECT id, title, description, template, icon, category FROM quick_actions"
                                " WHERE tenant_id = $1 ORDER BY created_at, id", tenant_id)
    return [*BUILT_IN, *(QuickAction(**dict(r)) for r in rows)]


async def require_known(core: Core, tenant_id: str, action_id: str, field: str = "actionId") -> None:
    if action_id not in {a.id for a in await catalogue(core, tenant_id)}:
        raise NotFound("Quick action", field)


async def listing(core: Core, principal: Principal) -> list[Listed]:
    actions = await catalogue(core, principal.tenant_id)
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        favorites = {r["action_id"] for r in await conn.fetch(
            "SELECT action_id FROM quick_action_favorites WHERE tenant_id = $1 AND user_id = $2",
            principal.tenant_id, principal.user_id)}
        usage = {r["action_id"]: r["n"] for r in await conn.fetch(
            "SELECT action_id, count(*) AS n FROM history WHERE tenant_id = $1 AND user_id = $2"
            " AND action_id IS NOT NULL GROUP BY action_id", principal.tenant_id, principal.user_id)}
    return [Listed(action=a, is_favorite=a.id in favorites, usage_count=usage.get(a.id, 0)) for a in actions]


async def favorites(core: Core, principal: Principal) -> list[str]:
    """The caller's favorite action ids, oldest first."""
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return [r["action_id"] for r in await conn.fetch(
            "SELECT action_id FROM quick_action_favorites WHERE tenant_id = $1 AND user_id = $2"
            " ORDER BY added_at, action_id", principal.tenant_id, principal.user_id)]


async def set_favorite(core: Core, principal: Principal, action_id: str, is_favorite: bool) -> list[str]:
    """Add or remove a favorite; past MAX_FAVORITES the oldest is dropped. Returns the favorites, oldest first."""
    if is_favorite:
        await require_known(core, principal.tenant_id, action_id)
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        # Serialise one user's favorite changes, so two concurrent adds cannot both keep 21.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 17))",
                           f"{principal.tenant_id}/{principal.user_id}/favorites")
        if not is_favorite:
            await conn.execute("DELETE FROM quick_action_favorites WHERE tenant_id = $1 AND user_id = $2"
                               " AND action_id = $3", principal.tenant_id, principal.user_id, action_id)
        else:
            await conn.execute("INSERT INTO quick_action_favorites (tenant_id, user_id, action_id) VALUES ($1, $2, $3)"
                               " ON CONFLICT DO NOTHING", principal.tenant_id, principal.user_id, action_id)
            await conn.execute(
                "DELETE FROM quick_action_favorites WHERE tenant_id = $1 AND user_id = $2 AND action_id IN"
                " (SELECT action_id FROM quick_action_favorites WHERE tenant_id = $1 AND user_id = $2"
                "  ORDER BY added_at DESC, action_id DESC OFFSET $3)",
                principal.tenant_id, principal.user_id, MAX_FAVORITES)
    return await favorites(core, principal)


async def define(core: Core, principal: Principal, action: QuickAction) -> QuickAction:
    """A tenant's own quick action; its id may not shadow a built-in one or another of the tenant's."""
    if not ID_RE.match(action.id):
        raise ApiError(400, "id must be 1-64 lowercase letters, digits or '-'", "id")
    if len(action.template.strip()) < 10:
        raise ApiError(400, "template must be a command of at least 10 characters", "template")
    if action.id in _BUILT_IN_IDS:
        raise ApiError(409, f"Quick action {action.id!r} is built in", "id")
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        inserted = await conn.fetchval(
            "INSERT INTO quick_actions (tenant_id, id, title, description, template, icon, category, created_by)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING true",
            principal.tenant_id, action.id, action.title, action.description, action.template, action.icon,
            action.category, principal.user_id)
    if not inserted:
        raise ApiError(409, f"Quick action {action.id!r} already exists", "id")
    return action
