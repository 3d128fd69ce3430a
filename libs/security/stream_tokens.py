"""Short-lived stream tokens: what a browser's EventSource (which cannot set headers) puts in the URL.

A stream token opens one workflow's live stream for a few minutes and nothing else: its own `typ` and
audience, so it is never accepted as a bearer token, and the user's long-lived JWT never appears in a URL
(where proxies and access logs keep it).
"""

from __future__ import annotations

import time
import uuid

import jwt

from libs.events.settings import Settings
from libs.security.auth import ALGORITHMS, InvalidToken, Principal

STREAM_TYP = "weft-stream"
STREAM_TTL_S = 300


def _audience(settings: Settings) -> str:
    return f"{settings.jwt_audience}:stream"


def issue_stream_token(settings: Settings, principal: Principal, workflow_id: uuid.UUID,
                       ttl_s: int = STREAM_TTL_S, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"iss": settings.jwt_issuer, "aud": _audience(settings), "typ": STREAM_TYP, "sub": principal.user_id,
              "tid": principal.tenant_id, "wid": str(workflow_id), "iat": issued, "exp": issued + ttl_s}
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHMS[0])


def verify_stream_token(settings: Settings, token: str, workflow_id: uuid.UUID) -> Principal:
    """The principal the token was issued to, if it is a live stream token for `workflow_id`."""
    try:
        claims = jwt.decode(token, settings.jwt_secret, algorithms=ALGORITHMS, audience=_audience(settings),
                            issuer=settings.jwt_issuer, options={"require": ["exp", "sub", "aud", "iss"]})
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("stream token has expired; ask for a new one") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid stream token: {exc}") from exc
    if claims.get("typ") != STREAM_TYP or not isinstance(claims.get("tid"), str):
        raise InvalidToken("invalid stream token: not a stream token")
    if claims.get("wid") != str(workflow_id):
        raise InvalidToken("stream token was issued for another workflow")
    return Principal(tenant_id=claims["tid"], user_id=str(claims["sub"]))
