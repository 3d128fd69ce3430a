"""Gateway composition root: HTTP surfaces over the command bus and read models."""

from __future__ import annotations

from litestar import Litestar

from libs.events.bus import CommandBus
from libs.events.service import ServiceContext, create_service_app
from libs.events.settings import Settings, load_settings
from services.gateway import assistant, console, executions, streams, v2
from services.gateway.commands import Dispatcher
from services.gateway.errors import EXCEPTION_HANDLERS

SERVICE = "gateway"


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings(service=SERVICE)

    async def setup(ctx: ServiceContext) -> None:
        app.state.settings = settings
        app.state.bus = CommandBus(ctx.nc, ctx.js, settings.command_timeout_s)
        app.state.dispatcher = Dispatcher(app.state.bus, ctx.store)

    app = create_service_app(
        settings,
        name=SERVICE,
        setup=setup,
        route_handlers=[v2.router, console.router, assistant.router, executions.router, *streams.routers],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    return app
