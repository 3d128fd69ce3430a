"""Signing a person in to the dashboard: a one-time link (spent once, recorded) or the deployment's JWT."""

from __future__ import annotations

from datetime import UTC, datetime

from libs.security.auth import InvalidToken, Principal, verify_token
from libs.security.signin_tokens import InvalidSignin, verify_signin_token
from services.gateway.core import Core
from services.gateway.core.errors import ApiError


async def redeem_link(core: Core, token: str) -> Principal:
    """The person a sign-in link names; its id is spent in the same transaction, so a second use fails."""
    try:
        principal, token_id = verify_signin_token(core.settings, token)
    except InvalidSignin as exc:
        raise ApiError(400, str(exc).capitalize(), "token") from None
    async with core.store.tenant_transaction(principal.tenant_id) as conn:
        spent = await conn.fetchval(
            "INSERT INTO signin_links_used (id, tenant_id, user_id, used_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (id) DO NOTHING RETURNING true",
            token_id, principal.tenant_id, principal.user_id, datetime.now(UTC))
    if not spent:
        raise ApiError(400, "This sign-in link was already used; ask for a new one", "token")
    return principal


def exchange_token(core: Core, token: str) -> Principal:
    """The person a user JWT of the deployment's issuer names (the same checks as every API request)."""
    token = token.strip()
    if not token:
        raise ApiError(400, "Paste a token from your identity provider", "token")
    try:
        return verify_token(core.settings, token)
    except InvalidToken as exc:
        raise ApiError(400, str(exc).capitalize(), "token") from None
