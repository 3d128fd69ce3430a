"""Dashboard pages for the tenant's integrations: webhook endpoints and deliveries (replay a dead letter), and
API keys (create shows the key once, deactivate, rotate)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from libs.adapters.webhooks import EVENTS
from libs.security.auth import Principal
from services.gateway.core import Core, deliveries, keys, workflows
from services.gateway.core.errors import ApiError
from services.gateway.dashboard import forms
from services.gateway.dashboard.render import page


async def _webhooks(request: Request, principal: Principal, core: Core, *, status: str = "",
                    errors: dict[str, str] | None = None, values: dict[str, str] | None = None, notice: str = "",
                    created: dict[str, str] | None = None, code: int = 200) -> Response:
    return page(request, "webhooks.html", code, title="Webhooks", endpoints=await deliveries.endpoints(core, principal),
                deliveries=await deliveries.deliveries(core, principal, status or None), status=status,
                statuses=deliveries.STATUSES, events=EVENTS, errors=errors or {}, values=values or {}, notice=notice,
                created=created)


@get("/webhooks")
async def show_webhooks(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                        status: Annotated[str, QueryParameter(max_length=20)] = "") -> Response:
    if status and status not in deliveries.STATUSES:
        return await _webhooks(request, principal, core, errors={"status": "Choose a listed status"}, code=400)
    return await _webhooks(request, principal, core, status=status)


@post("/webhooks")
async def create_webhook(request: Request, principal: NamedDependency[Principal],
                         core: NamedDependency[Core]) -> Response:
    form = await forms.read(request)
    try:
        endpoint_id, secret, standard = await deliveries.create(core, principal, form.get("url").strip(),
                                                                form.lists.get("events") or None,
                                                                form.get("owner_email").strip() or None)
    except ApiError as exc:
        return await _webhooks(request, principal, core, errors=forms.errors_of(exc, ("url", "events", "owner_email"),
                                                                                 "url"),
                               values=form.values, code=forms.status_of(exc))
    return await _webhooks(request, principal, core, code=201, notice="Endpoint created.",
                           created={"id": str(endpoint_id), "secret": secret, "standard": standard})


@post("/webhooks/deliveries/{delivery_id:uuid}/replay")
async def replay(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                 delivery_id: FromPath[uuid.UUID]) -> Response:
    try:
        done = await deliveries.replay(core, principal, delivery_id)
    except ApiError as exc:
        return await _webhooks(request, principal, core, errors={f"delivery-{delivery_id}": exc.message},
                               code=forms.status_of(exc))
    return await _webhooks(request, principal, core, notice=f"Delivery {done['id']} replayed: attempt "
                                                            f"{done['attempt']} is due now.")


async def _keys(request: Request, principal: Principal, core: Core, *, errors: dict[str, str] | None = None,
                values: dict[str, str] | None = None, shown: dict[str, str] | None = None, code: int = 200) -> Response:
    found, _ = await workflows.list_page(core, principal, limit=500)
    return page(request, "keys.html", code, title="API keys", keys=await keys.list_all(core, principal),
                workflows=found, errors=errors or {}, values=values or {}, shown=shown)


@get("/keys")
async def show_keys(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core]) -> Response:
    return await _keys(request, principal, core)


@post("/keys")
async def create_key(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core]) -> Response:
    form = await forms.read(request)
    try:
        raw_limit = form.get("monthly_limit").strip()
        if raw_limit and not raw_limit.isdigit():
            raise ApiError(400, "monthly_limit must be a whole number, or empty for no limit", "monthly_limit")
        key, row = await keys.create(core, principal, form.get("name"), form.lists.get("workflow_ids", []),
                                     int(raw_limit) if raw_limit and len(raw_limit) < 12 else None)
    except ApiError as exc:
        return await _keys(request, principal, core, values=form.values, code=forms.status_of(exc),
                           errors=forms.errors_of(exc, ("name", "workflow_ids", "monthly_limit"), "name"))
    return await _keys(request, principal, core, code=201, shown={"name": row["name"], "key": key, "verb": "created"})


@post("/keys/{key_id:uuid}/deactivate")
async def deactivate_key(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                         key_id: FromPath[uuid.UUID]) -> Response:
    await keys.deactivate(core, principal, key_id)
    return await _keys(request, principal, core)


@post("/keys/{key_id:uuid}/rotate")
async def rotate_key(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                     key_id: FromPath[uuid.UUID]) -> Response:
    key, row = await keys.rotate(core, principal, key_id)
    return await _keys(request, principal, core, shown={"name": row["name"], "key": key, "verb": "rotated"})


route_handlers = [show_webhooks, create_webhook, replay, show_keys, create_key, deactivate_key, rotate_key]
