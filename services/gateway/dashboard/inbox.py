"""The approvals inbox: every paused approval step with what its approver must see (rows, display fields),
approved or rejected with a comment; a refusal (not an approver, a comment required) shows next to the form."""

from __future__ import annotations

import uuid

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from libs.security.auth import Principal
from services.gateway import approvals as links
from services.gateway.core import Core, inbox
from services.gateway.core.errors import ApiError
from services.gateway.dashboard import forms
from services.gateway.dashboard.render import page, see_other


async def _inbox(request: Request, principal: Principal, core: Core, *, errors: dict[str, str] | None = None,
                 values: dict[str, str] | None = None, code: int = 200) -> Response:
    return page(request, "inbox.html", code, title="Approvals inbox", pending=await inbox.pending(core, principal),
                approver=inbox.approver_of(principal), errors=errors or {}, values=values or {})


@get("/inbox")
async def show_inbox(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core]) -> Response:
    return await _inbox(request, principal, core)


@post("/inbox/{run_id:uuid}/{step_id:str}")
async def decide(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                 run_id: FromPath[uuid.UUID], step_id: FromPath[str]) -> Response:
    form = await forms.read(request)
    key = f"{run_id}/{step_id}"
    try:
        await inbox.decide(core, principal, run_id, step_id, form.get("decision"), form.get("comment"),
                           client_ip=links.client_ip(request), user_agent=links.user_agent(request))
    except ApiError as exc:
        return await _inbox(request, principal, core, errors={key: exc.message}, values={key: form.get("comment")},
                            code=forms.status_of(exc))
    return see_other(form.get("next") if form.get("next", "").startswith("/dashboard/") else "/dashboard/inbox")


route_handlers = [show_inbox, decide]
