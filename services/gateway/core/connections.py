"""Connected-account use cases: connect with OAuth (PKCE and state), status, refresh, disconnect; and the check
that a plan's providers are connected. Tokens stay sealed in the database and never leave this process in
an answer or a log line (docs/decisions/0072)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import structlog

from libs.adapters import connections as store
from libs.adapters import oauth
from libs.adapters.outbound import GuardedHttpClient
from libs.events.bus import TENANT_RE
from libs.security.auth import Principal
from libs.security.secrets import SecretBox
from services.gateway.core import Core
from services.gateway.core.errors import ApiError, NotFound

log = structlog.get_logger()
STATE_TTL = timedelta(minutes=10)
PROVIDER_NOT_CONNECTED = "provider_not_connected"
TITLES = {"google": "Google", "salesforce": "Salesforce"}


def provider(core: Core, name: str) -> oauth.Provider:
    if name not in oauth.PROVIDERS:
        raise NotFound("Provider")
    p = oauth.provider(core.settings, name)
    if not p.client_id:
        raise ApiError(400, f"{TITLES[name]} is not configured on this server (WEFT_{name.upper()}_CLIENT_ID)",
                       "provider")
    return p


def connect_path(name: str) -> str:
    return f"/api/auth/{name}/connect"


def _redirect_uri(core: Core, name: str) -> str:
    return f"{core.settings.public_base_url.rstrip('/')}/api/auth/{name}/callback"


async def start(core: Core, principal: Principal, name: str) -> str:
    """Begin connecting: remember a single-use state and a PKCE verifier; the URL to send the browser to."""
    p = provider(core, name)
    keyring = SecretBox.from_settings(core.settings)
    verifier = oauth.new_verifier()
    state = f"{principal.tenant_id}.{secrets.token_urlsafe(32)}"  # the callback has no bearer: the tenant rides here
    key_id, sealed = keyring.seal(verifier, f"state/{state}")
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        await conn.execute("DELETE FROM oauth_states WHERE tenant_id = $1 AND expires_at < now()", principal.tenant_id)
        await conn.execute("INSERT INTO oauth_states (state, tenant_id, user_id, provider, key_id, verifier_enc,"
                           " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)", state, principal.tenant_id,
                           principal.user_id, name, key_id, sealed, datetime.now(UTC) + STATE_TTL)
    return oauth.authorize_url(p, state=state, verifier=verifier, redirect_uri=_redirect_uri(core, name))


def _refused(name: str, exc: oauth.OAuthError, doing: str) -> ApiError:
    if exc.permanent:
        return ApiError(400, f"{TITLES[name]} refused {doing}: {exc.message}", code=PROVIDER_NOT_CONNECTED)
    return ApiError(502, f"Could not reach {TITLES[name]} while {doing}; try again", code="provider_unreachable")


async def finish(core: Core, name: str, state: str | None, code: str | None, error: str | None) -> Principal:
    """The provider's redirect back: take the state (once), exchange the code with the verifier, keep the tokens."""
    p = provider(core, name)
    tenant_id = (state or "").partition(".")[0]
    if not state or not TENANT_RE.match(tenant_id):
        raise ApiError(400, "Missing or malformed state", "state")
    async with core.store.tenant_transaction(tenant_id) as conn:
        row = await conn.fetchrow("DELETE FROM oauth_states WHERE tenant_id = $1 AND state = $2 AND provider = $3"
                                  " RETURNING user_id, key_id, verifier_enc, expires_at", tenant_id, state, name)
    if row is None:
        raise ApiError(400, "Unknown or already used state; start connecting again", "state")
    if row["expires_at"] < datetime.now(UTC):
        raise ApiError(400, "This connection attempt expired; start connecting again", "state")
    if error:
        raise ApiError(400, f"{TITLES[name]} did not grant access: {error[:100]}", "error")
    if not code:
        raise ApiError(400, "Missing code", "code")
    keyring = SecretBox.from_settings(core.settings)
    verifier = keyring.open(row["key_id"], row["verifier_enc"], f"state/{state}")
    async with GuardedHttpClient(core.settings) as client:
        try:
            tokens = await oauth.exchange(client, p, code=code, verifier=verifier, redirect_uri=_redirect_uri(core, name))
        except oauth.OAuthError as exc:
            raise _refused(name, exc, "the authorization code") from None
        email = await oauth.account_email(client, p, tokens)
    async with core.store.tenant_transaction(tenant_id) as conn:
        await store.save(conn, keyring, tenant_id, row["user_id"], name, tokens, email)
    log.info("account_connected", provider=name, tenant=tenant_id, user=row["user_id"], scopes=len(tokens.scopes))
    return Principal(tenant_id=tenant_id, user_id=row["user_id"])


async def status(core: Core, principal: Principal) -> dict[str, store.Connection]:
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        return {c.provider: c for c in await store.describe(conn, principal.tenant_id, principal.user_id)}


async def refresh(core: Core, principal: Principal, name: str) -> store.Connection:
    """Refresh the access token now (the refresh token stays on the server)."""
    p = provider(core, name)
    keyring = SecretBox.from_settings(core.settings)
    async with GuardedHttpClient(core.settings) as client:
        async with core.store.tenant_transaction(principal.tenant_id) as conn:
            try:
                await store.usable(conn, keyring, client, p, principal.tenant_id, principal.user_id,
                                   force_refresh=True)
            except store.NotConnected as exc:
                raise ApiError(404 if exc.reason.endswith("not connected") else 400, str(exc), "provider",
                               code=PROVIDER_NOT_CONNECTED) from None
            except oauth.OAuthError as exc:
                raise _refused(name, exc, "the refresh") from None
    return (await status(core, principal))[name]


async def disconnect(core: Core, principal: Principal, name: str) -> None:
    """Revoke at the provider, then delete. If the provider cannot be reached the connection is kept (502): a
    deleted row whose token still works at the provider is what revoking exists to prevent."""
    p = provider(core, name)
    keyring = SecretBox.from_settings(core.settings)
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        tokens = await store.load(conn, keyring, principal.tenant_id, principal.user_id, name)
    if tokens is None:
        raise NotFound(f"{TITLES[name]} connection", "provider")
    async with GuardedHttpClient(core.settings) as client:
        try:  # revoking the refresh token ends the grant (and its access tokens) at Google and Salesforce
            await oauth.revoke(client, p, tokens.refresh_token or tokens.access_token)
        except oauth.OAuthError as exc:
            raise _refused(name, exc, "the revocation") from None
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        await store.delete(conn, principal.tenant_id, principal.user_id, name)
    log.info("account_disconnected", provider=name, tenant=principal.tenant_id, user=principal.user_id)


async def require_usable(core: Core, principal: Principal, providers: list[str], field: str = "command") -> None:
    """Refuse (400, with where to connect) a plan whose steps act as an account the user has not connected or
    whose token cannot be refreshed: checked once per plan, before its run starts (docs/decisions/0073)."""
    if not providers:
        return
    keyring = SecretBox.from_settings(core.settings)
    async with GuardedHttpClient(core.settings) as client:
        for name in providers:
            p = oauth.provider(core.settings, name)
            url = f"{core.settings.public_base_url.rstrip('/')}{connect_path(name)}"
            if not p.client_id:
                raise ApiError(400, f"This command needs a {TITLES[name]} account, and {TITLES[name]} is not "
                                    "configured on this server", field, code=PROVIDER_NOT_CONNECTED)
            async with core.store.tenant_transaction(principal.tenant_id) as conn:
                try:
                    await store.usable(conn, keyring, client, p, principal.tenant_id, principal.user_id)
                except store.NotConnected as exc:
                    raise ApiError(400, f"This command needs your {TITLES[name]} account ({exc.reason}); "
                                        f"connect it at {url}", field, code=PROVIDER_NOT_CONNECTED) from None
                except oauth.OAuthError as exc:
                    raise _refused(name, exc, "the refresh") from None
