"""The dashboard's session: a signed, HttpOnly, SameSite=Lax cookie scoped to /dashboard, and CSRF checks.

The session is stateless (the cookie carries tenant, user, email, a CSRF secret and an expiry, signed with a
key derived from the user-token key), so every gateway replica accepts it. Every unsafe request must carry the
session's CSRF token (a hidden form field, or the X-CSRF-Token header htmx sends), compared in constant time.
Only /dashboard sees the cookie (its Path) or this check: the API stays cookie-free and CSRF-free
(docs/decisions/0080-dashboard.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import quote

import msgspec
from litestar import Request, Response
from litestar.datastructures import Cookie

from libs.security.auth import Principal

COOKIE = "weft_session"
SIGNIN_COOKIE = "weft_signin_csrf"  # double-submit token of the sign-in forms (there is no session yet)
PATH = "/dashboard"
TTL_S = 12 * 3600
CSRF_FIELD, CSRF_HEADER = "csrf_token", "x-csrf-token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Session(msgspec.Struct, frozen=True, array_like=True):
    tenant_id: str
    user_id: str
    email: str | None
    csrf: str
    expires: int

    @property
    def principal(self) -> Principal:
        return Principal(tenant_id=self.tenant_id, user_id=self.user_id, email=self.email)


class SignInRequired(Exception):
    """No valid session: a page redirects to the sign-in page, an htmx request is told to go there."""


class CsrfRejected(Exception):
    """An unsafe request without its session's CSRF token: 403, nothing changed."""


def _key(settings) -> bytes:
    return hmac.new(settings.jwt_secret.encode(), b"weft-dashboard-session-v1", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(settings, session: Session) -> str:
    body = msgspec.json.encode(session)
    return f"{_b64(body)}.{_b64(hmac.new(_key(settings), body, hashlib.sha256).digest())}"


def decode(settings, value: str | None) -> Session | None:
    if not value or value.count(".") != 1 or len(value) > 4096:
        return None
    body_part, sig_part = value.split(".")
    try:
        body, sig = _unb64(body_part), _unb64(sig_part)
    except ValueError:
        return None
    if not hmac.compare_digest(sig, hmac.new(_key(settings), body, hashlib.sha256).digest()):
        return None
    try:
        session = msgspec.json.decode(body, type=Session)
    except msgspec.DecodeError:
        return None
    return session if session.expires > time.time() else None


def _secure(settings) -> bool:
    return settings.public_base_url.startswith("https://")


def session_cookie(settings, principal: Principal) -> Cookie:
    session = Session(tenant_id=principal.tenant_id, user_id=principal.user_id, email=principal.email,
                      csrf=secrets.token_urlsafe(32), expires=int(time.time()) + TTL_S)
    return Cookie(key=COOKIE, value=encode(settings, session), path=PATH, httponly=True, samesite="lax",
                  secure=_secure(settings), max_age=TTL_S)


def cleared_cookie(settings, key: str = COOKIE) -> Cookie:
    return Cookie(key=key, value="", path=PATH, httponly=True, samesite="lax", secure=_secure(settings), max_age=0)


def signin_csrf_cookie(settings, token: str) -> Cookie:
    return Cookie(key=SIGNIN_COOKIE, value=token, path=PATH, httponly=True, samesite="strict",
                  secure=_secure(settings), max_age=3600)


def current(request: Request) -> Session | None:
    return decode(request.app.state.settings, request.cookies.get(COOKIE))


async def provide_session(request: Request) -> Session:
    session = current(request)
    if session is None:
        raise SignInRequired()
    return session


async def provide_principal(request: Request) -> Principal:
    return (await provide_session(request)).principal


async def _submitted_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if (request.headers.get("content-type") or "").split(";")[0].strip() in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def check_csrf(request: Request) -> Response | None:
    """Router hook: refuse an unsafe request whose CSRF token does not match its session's (or, on the sign-in
    forms, the sign-in cookie's): CsrfRejected, a 403 page saying so; nothing is changed."""
    if request.method not in UNSAFE:
        return None
    submitted = await _submitted_token(request)
    if request.url.path.rstrip("/") == f"{PATH}/signin":
        expected = request.cookies.get(SIGNIN_COOKIE) or ""
    else:
        session = current(request)
        if session is None:
            raise SignInRequired()
        expected = session.csrf
    if expected and submitted and hmac.compare_digest(submitted.encode(), expected.encode()):
        return None
    raise CsrfRejected()


def signin_redirect_path(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{PATH}/signin?next={quote(target, safe='')}"
