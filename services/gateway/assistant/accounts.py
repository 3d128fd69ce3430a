"""Contract A's /api/auth: connect an account (OAuth), status with preferences, refresh, disconnect.

GET /api/auth/{provider}/connect redirects to the provider; its callback (no bearer token: the browser comes
back from the provider) exchanges the code and redirects to the dashboard. Tokens are never in an answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Redirect

from libs.security.auth import Principal
from services.gateway.assistant.common import assistant_router
from services.gateway.core import Core, connections, preferences
from services.gateway.errors import PlainError, responses

Provider = Annotated[str, msgspec.Meta(max_length=20)]


class OAuthStatus(msgspec.Struct, kw_only=True):
    isConnected: bool  # noqa: N815
    userEmail: str | None  # noqa: N815
    scopes: list[str]
    expiresAt: datetime | None  # noqa: N815


class PreferencesView(msgspec.Struct, kw_only=True):
    theme: str
    notificationsEnabled: bool  # noqa: N815
    defaultView: str  # noqa: N815
    favoriteActions: list[str]  # noqa: N815


class Session(msgspec.Struct, kw_only=True):
    userId: str  # noqa: N815
    email: str | None
    isAuthenticated: bool  # noqa: N815
    oauthStatus: OAuthStatus  # noqa: N815 - Google, as A documents it
    connections: dict[str, OAuthStatus]  # every provider (beyond A: Salesforce too)
    preferences: PreferencesView


class AuthStatus(msgspec.Struct, kw_only=True):
    isAuthenticated: bool  # noqa: N815
    session: Session


class PreferencesBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    theme: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    notificationsEnabled: bool | None = None  # noqa: N815
    defaultView: Annotated[str, msgspec.Meta(max_length=40)] | None = None  # noqa: N815


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # A's request names a refresh token; the server holds it (sealed) and ignores any sent (decision 0072).
    refreshToken: Annotated[str, msgspec.Meta(max_length=4096)] | None = None  # noqa: N815


class Refreshed(msgspec.Struct, kw_only=True):
    success: bool
    expires_in: int | None
    token_type: str
    expiresAt: datetime | None  # noqa: N815


class DisconnectBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    provider: Provider = "google"


class Done(msgspec.Struct, kw_only=True):
    success: bool
    message: str


def _oauth_status(found) -> OAuthStatus:
    if found is None:
        return OAuthStatus(isConnected=False, userEmail=None, scopes=[], expiresAt=None)
    return OAuthStatus(isConnected=True, userEmail=found.account_email, scopes=found.scopes, expiresAt=found.expires_at)


def _preferences(p: preferences.Preferences) -> PreferencesView:
    return PreferencesView(theme=p.theme, notificationsEnabled=p.notifications_enabled, defaultView=p.default_view,
                           favoriteActions=p.favorite_actions)


@get("/{provider:str}/connect", status_code=302, responses=responses(PlainError, 404))
async def connect(principal: NamedDependency[Principal], core: NamedDependency[Core],
                  provider: FromPath[str]) -> Redirect:
    """Redirect to the provider's consent page (authorization code with PKCE; single-use state, 10 minutes)."""
    return Redirect(await connections.start(core, principal, provider), status_code=302)


@get("/{provider:str}/callback", status_code=303, responses=responses(PlainError, 404, 502))
async def callback(core: NamedDependency[Core], provider: FromPath[str],
                   oauth_state: Annotated[str | None, QueryParameter(name="state", max_length=200)] = None,
                   code: Annotated[str | None, QueryParameter(max_length=4096)] = None,
                   error: Annotated[str | None, QueryParameter(max_length=500)] = None) -> Redirect:
    """Where the provider sends the browser back: the code is exchanged and the tokens kept, sealed."""
    await connections.finish(core, provider, oauth_state, code, error)
    return Redirect(f"/dashboard?connected={provider}", status_code=303)


@get("/status", responses=responses(PlainError))
async def auth_status(principal: NamedDependency[Principal], core: NamedDependency[Core]) -> AuthStatus:
    found = await connections.status(core, principal)
    prefs = await preferences.get(core, principal)
    return AuthStatus(isAuthenticated=True, session=Session(
        userId=principal.user_id, email=principal.email, isAuthenticated=True,
        oauthStatus=_oauth_status(found.get("google")),
        connections={name: _oauth_status(found.get(name)) for name in connections.TITLES},
        preferences=_preferences(prefs)))


@patch("/preferences", responses=responses(PlainError))
async def change_preferences(principal: NamedDependency[Principal], core: NamedDependency[Core],
                             data: JSONBody[PreferencesBody]) -> PreferencesView:
    """Change any of theme (system|light|dark), notificationsEnabled, defaultView; favorites change through
    POST /api/quick-actions/favorite."""
    return _preferences(await preferences.update(core, principal, theme=data.theme,
                                                 notifications_enabled=data.notificationsEnabled,
                                                 default_view=data.defaultView))


@post("/refresh-google-token", status_code=200, responses=responses(PlainError, 404, 502))
async def refresh_google_token(principal: NamedDependency[Principal], core: NamedDependency[Core],
                               data: JSONBody[RefreshBody | None] = None) -> Refreshed:
    found = await connections.refresh(core, principal, "google")
    expires_in = None if found.expires_at is None else max(0, int((found.expires_at - datetime.now(UTC)).total_seconds()))
    return Refreshed(success=True, expires_in=expires_in, token_type="Bearer", expiresAt=found.expires_at)


@post("/disconnect", status_code=200, responses=responses(PlainError, 404, 502))
async def disconnect(principal: NamedDependency[Principal], core: NamedDependency[Core],
                     data: JSONBody[DisconnectBody | None] = None) -> Done:
    """Revoke the account's grant at the provider, then forget its tokens (Google unless `provider` says)."""
    name = (data or DisconnectBody()).provider
    await connections.disconnect(core, principal, name)
    return Done(success=True, message=f"Successfully disconnected {connections.TITLES[name]} account")


router = assistant_router("/api/auth", [connect, auth_status, change_preferences, refresh_google_token, disconnect])
callback_router = assistant_router("/api/auth", [callback], signed_in=False)
