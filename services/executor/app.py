"""Executor composition root: owns runs; accepts StartRun and drives runs from their own events."""

from __future__ import annotations

from functools import partial

from litestar import Litestar

from libs.events.consumer import subscribe_commands, subscribe_events
from libs.events.schemas.run import RunCommand
from libs.events.service import ServiceContext, create_service_app
from libs.events.settings import Settings, load_settings
from services.executor.engine import Engine
from services.executor.handlers import handle_run_command, on_run_event

SERVICE = "executor"


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings(service=SERVICE)

    async def setup(ctx: ServiceContext) -> None:
        subscribe_commands(
            ctx.broker, service=SERVICE, settings=settings, store=ctx.store, nc=ctx.nc,
            command_type=RunCommand, handle=partial(handle_run_command, ctx.store),
        )
        # Each run event wakes the engine for that run; advancing is idempotent, so redelivery is safe.
        subscribe_events(
            ctx.broker, durable="executor-run-driver", subject="weft.evt.*.run.>", settings=settings,
            handle=partial(on_run_event, Engine(ctx.store)),
        )

    return create_service_app(settings, name=SERVICE, setup=setup)
