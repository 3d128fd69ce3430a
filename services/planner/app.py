"""Planner composition root: owns workflow definitions and their lifecycle."""

from __future__ import annotations

from functools import partial

from litestar import Litestar

from libs.events.consumer import subscribe_commands
from libs.events.schemas.workflow import WorkflowCommand
from libs.events.service import ServiceContext, create_service_app
from libs.events.settings import Settings, load_settings
from services.planner.handlers import handle_workflow_command

SERVICE = "planner"


def create_app(settings: Settings | None = None, *, handler=handle_workflow_command) -> Litestar:
    settings = settings or load_settings(service=SERVICE)

    async def setup(ctx: ServiceContext) -> None:
        subscribe_commands(
            ctx.broker, service=SERVICE, settings=settings, store=ctx.store, nc=ctx.nc,
            command_type=WorkflowCommand, handle=partial(handler, ctx.store),
        )

    return create_service_app(settings, name=SERVICE, setup=setup)
