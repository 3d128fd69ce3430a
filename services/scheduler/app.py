"""Scheduler composition root: fires durable timers, fires schedules, and owns the schedule streams."""

from __future__ import annotations

import asyncio
from functools import partial

from litestar import Litestar

from libs.events.consumer import subscribe_commands, subscribe_events
from libs.events.schemas.schedule import ScheduleCommand
from libs.runtime.service import ServiceContext, create_service_app
from libs.events.settings import Settings, load_settings
from services.scheduler.firing import ScheduleFirer
from services.scheduler.handlers import handle_schedule_command, on_run_finished, on_workflow_event
from services.scheduler.ticks import Ticker
from services.scheduler.timers import TimerFirer, timers_sampler
from libs.telemetry import metrics

SERVICE = "scheduler"
RUN_ENDINGS = ("RunCompleted", "RunFailed", "RunCancelled", "RunTerminated")
# A console workflow's schedule starts once its plan is approved (or at once when created active); a deleted
# workflow's schedules are deleted with it.
WORKFLOW_EVENTS = ("PlanApproved", "WorkflowCreated", "WorkflowDeleted")


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings(service=SERVICE)

    async def setup(ctx: ServiceContext) -> None:
        timers = TimerFirer(settings.database_url, ctx.js, poll_s=settings.scheduler_poll_s)
        ticker = Ticker(ctx.store, grace_s=settings.scheduler_misfire_grace_s, on_timers=timers.wake.set)
        firer = ScheduleFirer(settings.database_url, ticker, poll_s=settings.scheduler_poll_s)
        subscribe_commands(
            ctx.broker, service=SERVICE, settings=settings, store=ctx.store, nc=ctx.nc,
            command_type=ScheduleCommand, handle=partial(handle_schedule_command, ticker),
        )
        for event_type in RUN_ENDINGS:
            subscribe_events(
                ctx.broker, durable=f"scheduler-{event_type}", subject=f"weft.evt.*.run.*.{event_type}",
                settings=settings, handle=partial(on_run_finished, ticker),
            )
        for event_type in WORKFLOW_EVENTS:
            subscribe_events(
                ctx.broker, durable=f"scheduler-{event_type}", subject=f"weft.evt.*.workflow.*.{event_type}",
                settings=settings, handle=partial(on_workflow_event, ticker),
            )
        metrics.add_sampler(timers_sampler(ctx.pool))
        ctx.tasks.append(asyncio.create_task(timers.run(), name="timers"))
        ctx.tasks.append(asyncio.create_task(firer.run(), name="schedules"))

    return create_service_app(settings, name=SERVICE, setup=setup)
