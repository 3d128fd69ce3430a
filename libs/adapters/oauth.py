"""OAuth 2.0 clients for connected accounts: authorization code with PKCE (S256) and state, refresh, revoke.

Providers are configuration (client id and secret, endpoint URLs; real Google and Salesforce by default,
libs/events/settings.py), and every call goes through the guarded outbound client, so tests against local
fake servers run the same code as production (with WEFT_OUTBOUND_ALLOW_HOSTS=127.0.0.1).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import msgspec

from libs.adapters.outbound import GuardedHttpClient, OutboundError
from libs.events.settings import Settings

PROVIDERS = ("google", "salesforce")


class Provider(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    revoke_url: str
    userinfo_url: str
    api_base_url: str
    scopes: tuple[str, ...]


class TokenSet(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scopes: tuple[str, ...]
    token_type: str = "Bearer"
    instance_url: str | None = None  # Salesforce: where this org's REST API lives


class OAuthError(Exception):
    """The provider refused (status 4xx: `permanent`) or could not be reached."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message, self.permanent = message, permanent


def provider(settings: Settings, name: str) -> Provider:
    def get(field: str) -> str:
        return getattr(settings, f"{name}_{field}")

    return Provider(name=name, client_id=get("client_id"), client_secret=get("client_secret"),
                    authorize_url=get("authorize_url"), token_url=get("token_url"), revoke_url=get("revoke_url"),
                    userinfo_url=get("userinfo_url"), api_base_url=get("api_base_url"),
                    scopes=tuple(get("scopes").split()))


def new_verifier() -> str:
    return secrets.token_urlsafe(64)[:96]  # RFC 7636: 43-128 characters of [A-Za-z0-9-._~]


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(p: Provider, *, state: str, verifier: str, redirect_uri: str) -> str:
    query = {"response_type": "code", "client_id": p.client_id, "redirect_uri": redirect_uri,
             "scope": " ".join(p.scopes), "state": state, "code_challenge": challenge_of(verifier),
             "code_challenge_method": "S256"}
    if p.name == "google":  # a refresh token, every time the user consents
        query |= {"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"}
    return f"{p.authorize_url}?{urlencode(query)}"


def _json_or_empty(response) -> dict:
    """A JSON object body, else {} (Google's revoke answers 200 with an empty body)."""
    if not response.is_json():
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _form(client: GuardedHttpClient, url: str, fields: dict[str, str]) -> dict:
    try:
        response = await client.request("POST", url, content=urlencode(fields),
                                        headers={"Content-Type": "application/x-www-form-urlencoded",
                                                 "Accept": "application/json"})
    except OutboundError as exc:
        raise OAuthError(f"could not reach the provider: {exc}", permanent=False) from None
    body = _json_or_empty(response)
    if response.status >= 400:
        reason = body.get("error_description") or body.get("error") or f"HTTP {response.status}"
        raise OAuthError(str(reason)[:200], permanent=400 <= response.status < 500)
    return body


def _tokens(p: Provider, body: dict, now: datetime, previous: TokenSet | None = None) -> TokenSet:
    if not isinstance(body.get("access_token"), str):
        raise OAuthError("the provider's token response has no access_token", permanent=True)
    lifetime = body.get("expires_in")
    scopes = tuple(str(body["scope"]).split()) if body.get("scope") else (previous.scopes if previous else p.scopes)
    return TokenSet(
        access_token=body["access_token"],
        # A refresh response may omit the refresh token: the one we had stays valid.
        refresh_token=body.get("refresh_token") or (previous.refresh_token if previous else None),
        expires_at=now + timedelta(seconds=int(lifetime)) if isinstance(lifetime, int | float) else None,
        scopes=scopes, token_type=str(body.get("token_type") or "Bearer"),
        instance_url=body.get("instance_url") or (previous.instance_url if previous else None))


async def exchange(client: GuardedHttpClient, p: Provider, *, code: str, verifier: str, redirect_uri: str,
                   now: datetime | None = None) -> TokenSet:
    body = await _form(client, p.token_url, {
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": redirect_uri,
        "client_id": p.client_id, "client_secret": p.client_secret})
    return _tokens(p, body, now or datetime.now(UTC))


async def refresh(client: GuardedHttpClient, p: Provider, current: TokenSet, now: datetime | None = None) -> TokenSet:
    if not current.refresh_token:
        raise OAuthError("no refresh token; connect the account again", permanent=True)
    body = await _form(client, p.token_url, {
        "grant_type": "refresh_token", "refresh_token": current.refresh_token, "client_id": p.client_id,
        "client_secret": p.client_secret})
    return _tokens(p, body, now or datetime.now(UTC), current)


async def revoke(client: GuardedHttpClient, p: Provider, token: str) -> None:
    """Revoke at the provider; a token the provider no longer knows counts as revoked."""
    try:
        await _form(client, p.revoke_url, {"token": token, "client_id": p.client_id,
                                           "client_secret": p.client_secret})
    except OAuthError as exc:
        if not exc.permanent:
            raise


async def account_email(client: GuardedHttpClient, p: Provider, tokens: TokenSet) -> str | None:
    """The connected account's address (OpenID userinfo), or None when the provider does not say."""
    try:
        response = await client.request("GET", p.userinfo_url,
                                        headers={"Authorization": f"Bearer {tokens.access_token}"})
    except OutboundError:
        return None
    body = _json_or_empty(response) if response.status == 200 else {}
    email = body.get("email") if isinstance(body, dict) else None
    return email if isinstance(email, str) else None
