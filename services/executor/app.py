"""Executor composition root: owns runs; accepts run commands and drives runs."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from functools import partial

import nats.js.errors
from litestar import Litestar

from libs.events.bus import EVENTS_STREAM
from libs.events.consumer import subscribe_commands
from libs.events.schemas.run import RunCommand
from libs.runtime.service import ServiceContext, create_service_app
from libs.events.settings import Settings, load_settings
from services.executor import integrations
from services.executor.engine import Engine
from services.executor.handlers import handle_run_command
from services.executor.run_metrics import approvals_sampler
from libs.telemetry import metrics
from services.executor.leases import RunLeases
from services.executor.ownership import keep_leases

SERVICE = "executor"
# Event consumers earlier versions woke drivers with; every run event outside a driver is now appended by
# this process's command handler, which wakes the driver itself (services/executor/handlers.py).
RETIRED_CONSUMERS = ("executor-RunCreated", "executor-RunCancelRequested", "executor-RunTerminated")


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings(service=SERVICE)

    async def setup(ctx: ServiceContext) -> None:
        deps = integrations.build_deps(settings, ctx.store)
        # Any number of replicas: each run is driven by the one holding its lease (docs/decisions/0110).
        owner = settings.executor_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        engine = Engine(ctx.store, deps, leases=RunLeases(ctx.pool, owner, settings.executor_lease_s))
        subscribe_commands(
            ctx.broker, service=SERVICE, settings=settings, store=ctx.store, nc=ctx.nc,
            command_type=RunCommand, handle=partial(handle_run_command, ctx.store, engine=engine),
            max_workers=settings.command_workers,
        )
        for durable in RETIRED_CONSUMERS:
            try:
                await ctx.js.delete_consumer(EVENTS_STREAM, durable)
            except nats.js.errors.NotFoundError:
                pass
        metrics.add_sampler(approvals_sampler(ctx.pool))
        ctx.tasks.append(asyncio.create_task(engine.recover(ctx.pool)))
        ctx.tasks.append(asyncio.create_task(keep_leases(engine), name="executor-leases"))
        ctx.on_stop.append(engine.stop)
        ctx.on_stop.append(partial(integrations.close_deps, deps))

    return create_service_app(settings, name=SERVICE, setup=setup)
