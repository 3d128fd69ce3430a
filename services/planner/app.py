"""Planner composition root: owns workflow definitions, their plans and lifecycle."""

from __future__ import annotations

from litestar import Litestar

from libs.events.consumer import subscribe_commands
from libs.events.schemas import CommandEnvelope
from libs.events.schemas.workflow import WorkflowCommand
from libs.runtime.service import ServiceContext, create_service_app
from libs.events.settings import Settings, load_settings
from services.planner.cache import PlanCache
from services.planner.handlers import PLANNING_COMMANDS, handle_planning_command, handle_workflow_command
from services.planner.llm import LLMClient
from services.planner.planning import Planner

SERVICE = "planner"


def build_planner(settings: Settings, ctx: ServiceContext) -> Planner:
    llm = None
    if settings.llm_base_url:
        llm = LLMClient(base_url=settings.llm_base_url, api_key=settings.llm_api_key, model=settings.llm_model,
                        timeout_s=settings.llm_timeout_s)
    return Planner(llm, PlanCache(ctx.store, settings.plan_cache_ttl_s))


def create_app(settings: Settings | None = None, *, handler=handle_workflow_command) -> Litestar:
    settings = settings or load_settings(service=SERVICE)

    async def setup(ctx: ServiceContext) -> None:
        planner = build_planner(settings, ctx)

        async def handle(envelope: CommandEnvelope):
            if isinstance(envelope.command, PLANNING_COMMANDS):
                return await handle_planning_command(ctx.store, planner, envelope)
            return await handler(ctx.store, envelope)

        subscribe_commands(
            ctx.broker, service=SERVICE, settings=settings, store=ctx.store, nc=ctx.nc,
            command_type=WorkflowCommand, handle=handle, max_workers=settings.command_workers,
        )

    return create_service_app(settings, name=SERVICE, setup=setup)
