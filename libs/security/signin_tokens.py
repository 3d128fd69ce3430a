"""One-time dashboard sign-in links (`make up` prints one for the dev user, like a notebook server's token URL).

A JWT signed with the user-token key but with its own audience and `typ`, so it is never accepted as an API
bearer token, and an API token is never accepted as a sign-in link. Single use: the gateway records its `jti`
(signin_links_used, migration 030) in the transaction that signs the person in.
"""

from __future__ import annotations

import time
import uuid

import jwt

from libs.events.bus import TENANT_RE
from libs.events.settings import Settings
from libs.security.auth import ALGORITHMS, Principal

TYP = "weft-dashboard-signin"
DEFAULT_TTL_S = 24 * 3600


class InvalidSignin(Exception):
    pass


def _audience(settings: Settings) -> str:
    return f"{settings.jwt_audience}#dashboard-signin"


def issue_signin_token(settings: Settings, tenant_id: str, user_id: str, *, email: str | None = None,
                       ttl_s: int = DEFAULT_TTL_S) -> str:
    if not TENANT_RE.match(tenant_id):
        raise ValueError("tenant must be 1-64 characters of letters, digits, '_' or '-'")
    now = int(time.time())
    claims = {"iss": settings.jwt_issuer, "aud": _audience(settings), "sub": user_id, "typ": TYP,
              settings.jwt_tenant_claim: tenant_id, "iat": now, "exp": now + ttl_s, "jti": str(uuid.uuid4())}
    if email:
        claims["email"] = email
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHMS[0])


def verify_signin_token(settings: Settings, token: str) -> tuple[Principal, uuid.UUID]:
    """The person the link signs in, and the token id to spend."""
    try:
        claims = jwt.decode(token, settings.jwt_secret, algorithms=ALGORITHMS, audience=_audience(settings),
                            issuer=settings.jwt_issuer, options={"require": ["exp", "iss", "aud", "sub", "jti"]})
    except jwt.ExpiredSignatureError as exc:
        raise InvalidSignin("this sign-in link has expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidSignin(f"this sign-in link is not valid ({exc})") from exc
    tenant = claims.get(settings.jwt_tenant_claim)
    if claims.get("typ") != TYP or not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise InvalidSignin("this is not a dashboard sign-in link")
    try:
        token_id = uuid.UUID(str(claims["jti"]))
    except ValueError:
        raise InvalidSignin("this sign-in link has no valid id") from None
    email = claims.get("email")
    return Principal(tenant_id=tenant, user_id=str(claims["sub"]),
                     email=email if isinstance(email, str) and "@" in email and len(email) <= 320 else None), token_id


def signin_url(settings: Settings, base_url: str, tenant_id: str, user_id: str, *, email: str | None = None) -> str:
    return f"{base_url.rstrip('/')}/dashboard/signin?token={issue_signin_token(settings, tenant_id, user_id, email=email)}"
