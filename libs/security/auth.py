"""User JWTs: the embedded default's local issuer (`weft token`) and verification for the gateway."""

from __future__ import annotations

import time
import uuid

import jwt
import msgspec

from libs.events.bus import TENANT_RE
from libs.events.settings import Settings

# Fixed in code: a token can never choose its own algorithm (no "none", no RS/HS confusion).
ALGORITHMS = ["HS256"]


class Principal(msgspec.Struct, frozen=True):
    tenant_id: str
    user_id: str
    email: str | None = None  # the token's `email` claim, when it has one (plan-approval emails go there)


class InvalidToken(Exception):
    pass


_NUMERIC_DATES = ("exp", "iat", "nbf")  # RFC 7519 NumericDate: a JSON number, never a string of digits
MAX_SUB_CHARS = 256


def valid_tenant(value: object) -> bool:
    """A whole tenant id: fullmatch, because `$` also matches before a trailing newline ("tena\n")."""
    return isinstance(value, str) and TENANT_RE.fullmatch(value) is not None


def printable(value: str) -> bool:
    """No control characters (NUL above all: Postgres text and jsonb refuse it)."""
    return value.isprintable()


def issue_token(settings: Settings, tenant_id: str, user_id: str, ttl_s: int = 12 * 3600,
                email: str | None = None) -> str:
    if not valid_tenant(tenant_id):
        raise ValueError("tenant must be 1-64 characters of letters, digits, '_' or '-'")
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": user_id,
        settings.jwt_tenant_claim: tenant_id,
        "iat": now,
        "exp": now + ttl_s,
        "jti": str(uuid.uuid4()),
    }
    if email:
        claims["email"] = email
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHMS[0])


def verify_token(settings: Settings, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=ALGORITHMS,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token has expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid token: {exc}") from exc
    for name in _NUMERIC_DATES:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidToken(f"invalid token: the {name} claim must be a number")
    tenant = claims.get(settings.jwt_tenant_claim)
    if not valid_tenant(tenant):
        raise InvalidToken(f"token has no valid {settings.jwt_tenant_claim} claim")
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_CHARS or not printable(sub):
        raise InvalidToken(f"invalid token: the sub claim must be 1-{MAX_SUB_CHARS} printable characters")
    email = claims.get("email")
    usable = isinstance(email, str) and "@" in email and len(email) <= 320 and printable(email)
    return Principal(tenant_id=tenant, user_id=sub, email=email if usable else None)
