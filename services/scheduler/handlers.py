"""Thin handlers: schedule commands from the API, and the events the scheduler reacts to."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from libs.events.schemas import CommandEnvelope, Outcome
from services.scheduler.assistant_runs import start_approved_run
from services.scheduler.ticks import Ticker


async def handle_schedule_command(ticker: Ticker, envelope: CommandEnvelope) -> Outcome:
    return await ticker.command(envelope)


async def on_run_finished(ticker: Ticker, subject: str, headers: dict[str, Any], data: bytes) -> None:
    # weft.evt.<tenant>.run.<run uuid>.<EventType>
    _, _, tenant_id, _, run_key, _ = subject.split(".")
    await ticker.run_ended(tenant_id, uuid.UUID(run_key))


async def on_workflow_event(ticker: Ticker, subject: str, headers: dict[str, Any], data: bytes) -> None:
    # weft.evt.<tenant>.workflow.<workflow uuid>.<EventType>; the read model says what the workflow is now.
    _, _, tenant_id, _, workflow_key, event_type = subject.split(".")
    if event_type == "WorkflowDeleted":
        await ticker.workflow_deleted(tenant_id, uuid.UUID(workflow_key))
        return
    await ticker.attach_console_schedule(tenant_id, uuid.UUID(workflow_key))
    if event_type == "PlanApproved":
        plan_version = msgspec.json.decode(data).get("plan_version", 1)
        await start_approved_run(ticker.store, tenant_id, uuid.UUID(workflow_key), plan_version,
                                 now=ticker.clock(), wake=ticker.on_timers)
