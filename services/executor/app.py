"""Executor composition root: owns runs; accepts run commands and drives runs from their own events."""

from __future__ import annotations

import asyncio
from functools import partial

from litestar import Litestar

from libs.events.consumer import subscribe_commands, subscribe_events
from libs.events.schemas.run import RunCommand
from libs.events.service import ServiceContext, create_service_app
from libs.events.settings import Settings, load_settings
from services.executor import integrations
from services.executor.engine import Engine
from services.executor.handlers import handle_run_command, on_run_event

SERVICE = "executor"
WAKING_EVENTS = ("RunCreated", "RunCancelRequested", "RunTerminated")


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings(service=SERVICE)

    async def setup(ctx: ServiceContext) -> None:
        deps = integrations.build_deps(settings, ctx.store)
        engine = Engine(ctx.store, deps)
        subscribe_commands(
            ctx.broker, service=SERVICE, settings=settings, store=ctx.store, nc=ctx.nc,
            command_type=RunCommand, handle=partial(handle_run_command, ctx.store, engine=engine),
            max_workers=settings.command_workers,
        )
        # Only events written outside the run's driver wake it: a new run, cancel, terminate. The driver's
        # own events would only make it re-read what it just wrote (9 deliveries per 3-step run); a crash is
        # recovered by `engine.recover` at start-up, not by redelivery. Redelivery is harmless anyway.
        for event_type in WAKING_EVENTS:
            subscribe_events(
                ctx.broker, durable=f"executor-{event_type}", subject=f"weft.evt.*.run.*.{event_type}",
                settings=settings, handle=partial(on_run_event, engine),
            )
        ctx.tasks.append(asyncio.create_task(engine.recover(ctx.pool)))
        ctx.on_stop.append(engine.stop)
        ctx.on_stop.append(partial(integrations.close_deps, deps))

    return create_service_app(settings, name=SERVICE, setup=setup)
