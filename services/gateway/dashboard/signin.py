"""Signing in and out: a one-time link (printed by `make up`) or the deployment's JWT pasted in (the token
exchange page); both end in a session cookie. The sign-in forms carry their own double-submit CSRF token."""

from __future__ import annotations

import secrets
from typing import Annotated

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from services.gateway.core import Core, signin
from services.gateway.core.errors import ApiError
from services.gateway.dashboard import forms
from services.gateway.dashboard import session as sessions
from services.gateway.dashboard.render import page, see_other


def _next(raw: str) -> str:
    """Only a dashboard path (never another site: no open redirect)."""
    return raw if raw.startswith("/dashboard/") and not raw.startswith("/dashboard//") and "\\" not in raw \
        else "/dashboard/workflows"


def _form_page(request: Request, *, token: str = "", next_: str = "", error: str = "", code: int = 200
               ) -> Response:
    csrf = secrets.token_urlsafe(24)
    response = page(request, "signin.html", code, title="Sign in", link_token=token, next=_next(next_),
                    error=error, signin_csrf=csrf)
    response.set_cookie(sessions.signin_csrf_cookie(request.app.state.settings, csrf))
    return response


@get("/signin")
async def signin_page(request: Request, token: Annotated[str, QueryParameter(max_length=4096)] = "",
                      next_: Annotated[str, QueryParameter(name="next", max_length=2000)] = "") -> Response:
    """A sign-in link shows a button (a link scanner's GET spends nothing); without one, the exchange form."""
    return _form_page(request, token=token, next_=next_)


@post("/signin")
async def signin_submit(request: Request, core: NamedDependency[Core]) -> Response:
    form = await forms.read(request)
    try:
        if form.get("link_token"):
            principal = await signin.redeem_link(core, form.get("link_token"))
        else:
            principal = signin.exchange_token(core, form.get("token"))
    except ApiError as exc:
        return _form_page(request, next_=form.get("next"), error=exc.message, code=400)
    settings = request.app.state.settings
    response = see_other(_next(form.get("next")))
    response.set_cookie(sessions.session_cookie(settings, principal))
    response.set_cookie(sessions.cleared_cookie(settings, sessions.SIGNIN_COOKIE))
    return response


@post("/signout")
async def signout(request: Request) -> Response:
    response = see_other("/dashboard/signin")
    response.set_cookie(sessions.cleared_cookie(request.app.state.settings))
    return response


route_handlers = [signin_page, signin_submit, signout]
