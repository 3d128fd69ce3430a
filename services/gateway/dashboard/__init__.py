"""The web dashboard under /dashboard: one more surface over the gateway's core (docs/decisions/0080-dashboard.md).

Server-rendered pages (Jinja2) with htmx and its SSE extension, vendored under static/ at pinned versions and
served by the gateway. A signed cookie session scoped to /dashboard, CSRF-checked on every unsafe request.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.di import Provide
from litestar.static_files import create_static_files_router

from services.gateway.dashboard import admin, assistant, inbox, runs, schedules, signin, workflows
from services.gateway.dashboard.render import EXCEPTION_HANDLERS
from services.gateway.dashboard.session import check_csrf, provide_principal

STATIC = Path(__file__).parent / "static"

router = Router(
    path="/dashboard",
    route_handlers=[*signin.route_handlers, *workflows.route_handlers, *runs.route_handlers, *inbox.route_handlers,
                    *schedules.route_handlers, *admin.route_handlers, *assistant.route_handlers],
    dependencies={"principal": Provide(provide_principal)},
    before_request=check_csrf,
    exception_handlers=EXCEPTION_HANDLERS,
    include_in_schema=False,
)
static_router = create_static_files_router(path="/dashboard/static", directories=[STATIC], include_in_schema=False)
routers = (router, static_router)

__all__ = ["router", "routers", "static_router"]
