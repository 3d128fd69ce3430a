"""A user's assistant preferences (spec A's session.preferences): theme, notifications, default view, and their
favorite quick actions (kept by core/quick_actions.py)."""

from __future__ import annotations

import msgspec

from libs.security.auth import Principal
from services.gateway.core import Core, quick_actions
from services.gateway.core.errors import ApiError

THEMES = ("system", "light", "dark")
VIEWS = ("dashboard", "history", "quick-actions", "workflows")


class Preferences(msgspec.Struct, frozen=True, kw_only=True):
    theme: str = "system"
    notifications_enabled: bool = True
    default_view: str = "dashboard"
    favorite_actions: list[str] = []


async def get(core: Core, principal: Principal) -> Preferences:
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        row = await conn.fetchrow("SELECT theme, notifications_enabled, default_view FROM user_preferences"
                                  " WHERE tenant_id = $1 AND user_id = $2", principal.tenant_id, principal.user_id)
    favorites = await quick_actions.favorites(core, principal)
    return Preferences(**(dict(row) if row else {}), favorite_actions=favorites)


async def update(core: Core, principal: Principal, *, theme: str | None = None,
                 notifications_enabled: bool | None = None, default_view: str | None = None) -> Preferences:
    if theme is not None and theme not in THEMES:
        raise ApiError(400, f"theme must be one of: {', '.join(THEMES)}", "theme")
    if default_view is not None and default_view not in VIEWS:
        raise ApiError(400, f"defaultView must be one of: {', '.join(VIEWS)}", "defaultView")
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        await conn.execute(
            "INSERT INTO user_preferences (tenant_id, user_id, theme, notifications_enabled, default_view)"
            " VALUES ($1, $2, coalesce($3, 'system'), coalesce($4, true), coalesce($5, 'dashboard'))"
            " ON CONFLICT (tenant_id, user_id) DO UPDATE SET theme = coalesce($3, user_preferences.theme),"
            " notifications_enabled = coalesce($4, user_preferences.notifications_enabled),"
            " default_view = coalesce($5, user_preferences.default_view)",
            principal.tenant_id, principal.user_id, theme, notifications_enabled, default_view)
    return await get(core, principal)
