"""Rendering: the dashboard's Jinja environment, pages and fragments, and its error pages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Redirect

from libs.events.db import DB_UNAVAILABLE
from services.gateway.core.errors import ApiError
from services.gateway.dashboard import session as sessions

log = structlog.get_logger()

# Status is told by a word and a symbol, never by colour alone (the colour only repeats it).
SYMBOLS = {"completed": "✓", "failed": "✗", "cancelled": "⊘", "running": "↻", "pending": "…",
           "awaiting_approval": "⏸", "draft": "✎", "active": "●", "archived": "▪", "delivered": "✓",
           "dead": "✗", "skipped": "↷", "fired": "✓", "missed": "!", "inactive": "▪", "expired": "⌛",
           "waiting": "⏲", "retrying": "↻", "queued": "…", "buffered": "…"}


def _dt(value: Any, tz: Any = None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(tz or UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S ") + (value.tzname() or "")


def _json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"]))
env.filters.update(dt=_dt, json=_json)


def _csrf(session: sessions.Session | None) -> Markup:
    value = session.csrf if session is not None else ""
    return Markup(f'<input type="hidden" name="{sessions.CSRF_FIELD}" value="{escape(value)}">')


env.globals.update(symbols=SYMBOLS, csrf=_csrf)


def html(template: str, request: Request | None = None, **values: Any) -> str:
    session = sessions.current(request) if request is not None else None
    return env.get_template(template).render(session=session, path=request.url.path if request else "", **values)


def page(request: Request, template: str, code: int = 200, /, **values: Any) -> Response:
    return Response(html(template, request, **values), status_code=code, media_type="text/html",
                    headers={"Cache-Control": "no-store"})


def see_other(location: str) -> Redirect:
    return Redirect(location, status_code=303)


def error_page(request: Request, status: int, message: str, title: str | None = None) -> Response:
    titles = {400: "Request refused", 403: "Not allowed", 404: "Not found", 405: "Not allowed", 409: "Conflict",
              503: "Unavailable"}
    return page(request, "error.html", status, title=title or titles.get(status, "Request refused"), message=message)


def on_signin_required(request: Request, _: Exception) -> Response:
    if request.headers.get("hx-request"):
        return Response("", status_code=401, headers={"HX-Redirect": sessions.signin_redirect_path(request)})
    return see_other(sessions.signin_redirect_path(request))


def on_csrf_rejected(request: Request, _: Exception) -> Response:
    return error_page(request, 403, "This form's security token is missing or does not match your session. Reload "
                                    "the page and submit it again.", "Form expired")


def on_api_error(request: Request, exc: ApiError) -> Response:
    return error_page(request, exc.status if 400 <= exc.status < 600 else 400, exc.message)


def on_http_error(request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, ValidationException):
        return error_page(request, 400, "The request has a malformed parameter; check the address.")
    return error_page(request, exc.status_code if exc.status_code < 500 else 503, exc.detail or "Request refused")


def on_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("dashboard_unavailable", error=f"{type(exc).__name__}: {exc}")
    return error_page(request, 503, "The database is unavailable; try again shortly.")


def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("dashboard_error", path=request.url.path)
    return error_page(request, 500, "Something went wrong on our side; it was logged.", "Error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    sessions.SignInRequired: on_signin_required, sessions.CsrfRejected: on_csrf_rejected, ApiError: on_api_error, HTTPException: on_http_error,
    **{kind: on_unavailable for kind in DB_UNAVAILABLE}, Exception: on_unexpected,
}
