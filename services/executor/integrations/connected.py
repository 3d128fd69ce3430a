"""What steps that act as a user's connected account share: the run's user, and a usable access token for the
provider (refreshed before it expires, libs/adapters/connections.py). No usable connection is a clear,
non-retryable step error naming the provider and where to connect it."""

from __future__ import annotations

from libs.adapters import connections, oauth
from libs.security.secrets import SecretBox
from services.executor.steps import StepCall, StepDeps, StepError

TITLES = {"google": "Google", "salesforce": "Salesforce"}


async def tokens_for(deps: StepDeps, call: StepCall, provider_name: str, step: str) -> oauth.TokenSet:
    """The token set of the run's user for `provider_name`; its access token is good for a while."""
    title = TITLES[provider_name]
    p = oauth.provider(deps.settings, provider_name)
    if not p.client_id:
        raise StepError(f"{step}: {title} is not configured on this server (WEFT_{provider_name.upper()}_CLIENT_ID)")
    store = deps.extra.get("store")
    if store is None or deps.http is None:
        raise StepError(f"{step}: no database or HTTP client to reach {title} with")
    async with store.tenant_transaction(call.tenant_id) as conn:
        user = await conn.fetchval("SELECT created_by FROM runs WHERE tenant_id = $1 AND id = $2",
                                   call.tenant_id, call.run_id)
        try:
            return await connections.usable(conn, SecretBox.from_settings(deps.settings), deps.http, p,
                                            call.tenant_id, user or "")
        except connections.NotConnected as exc:
            raise StepError(f"{step}: {exc} for user {user!r}; connect it at /api/auth/{provider_name}/connect"
                            ) from None
        except oauth.OAuthError as exc:  # the provider could not be reached to refresh: try again later
            raise StepError(f"{step}: could not refresh the {title} token: {exc.message}", retryable=True) from None


def bearer(tokens: oauth.TokenSet) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.access_token}", "Accept": "application/json"}
