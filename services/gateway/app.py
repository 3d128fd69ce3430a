"""Gateway composition root: HTTP surfaces over the command bus and read models."""

from __future__ import annotations

import asyncio

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide

from libs.events.bus import CommandBus
from libs.security.ratelimit import SharedBuckets
from libs.runtime.service import ServiceContext, create_service_app
from libs.events.settings import Settings, load_settings
from services.gateway.auth_limit import failed_auth_limit_middleware
from services.gateway import approvals, assistant, console, executions, streams, v2
from services.gateway import api_keys, catalogue, dashboard, public
from services.gateway import webhooks as webhooks_admin
from services.gateway.v2 import agents as v2_agents
from services.gateway.commands import Dispatcher
from services.gateway.core import Core
from services.gateway.errors import EXCEPTION_HANDLERS
from services.gateway.openapi import openapi_config
from services.gateway.ratelimit import v2_rate_limit_middleware
from services.gateway.text_guard import refuse_nul

SERVICE = "gateway"


def provide_core(state: State) -> Core:
    return state.core


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings(service=SERVICE)

    async def setup(ctx: ServiceContext) -> None:
        app.state.settings = settings
        # Commands are accepted into the Postgres command log, then published (docs/decisions/0030).
        app.state.bus = CommandBus(ctx.nc, ctx.js, settings.command_timeout_s, store=ctx.store)
        app.state.dispatcher = Dispatcher(app.state.bus, ctx.store)
        app.state.core = Core(store=ctx.store, dispatcher=app.state.dispatcher, bus=app.state.bus, settings=settings)
        app.state.buckets = SharedBuckets(ctx.pool)  # rate limits shared by every gateway process
        ctx.tasks.append(asyncio.create_task(app.state.buckets.sweep_forever()))

    app = create_service_app(
        settings,
        name=SERVICE,
        setup=setup,
        route_handlers=[v2.router, console.router, *assistant.routers, executions.router, *streams.routers,
                        public.router, api_keys.router, v2_agents.router, approvals.router, webhooks_admin.router,
                        *dashboard.routers, catalogue.asyncapi],
        exception_handlers=assistant.with_assistant_routing_errors(public.with_public_routing_errors(EXCEPTION_HANDLERS)),
        middleware=[v2_rate_limit_middleware],
        request_max_body_size=settings.max_body_bytes,
        dependencies={"core": Provide(provide_core, sync_to_thread=False)},
        openapi_config=openapi_config(),
        before_request=refuse_nul,
        access_log=True,  # one JSON line per request (libs/runtime/http_telemetry.py)
    )
    app.state.settings = settings
    # The public API's key check and rate limit wrap the whole app, outside routing: Litestar runs middleware
    # only for a matched route, and D's headers belong on its routing errors (404, 405) too.
    # Failed authentication is counted outside them both, so a wrong API key and a wrong JWT spend the same
    # per-address bucket (docs/decisions/0054).
    app.asgi_handler = failed_auth_limit_middleware(public.middleware(app.asgi_handler))
    return app
