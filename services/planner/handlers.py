"""Thin command handlers: definition commands through the decider; planning commands call the planner
(the one I/O step), record the result as events, and only then decide."""

from __future__ import annotations

import uuid

import msgspec

from libs.events.aggregate import handle_command, metadata_for
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.schemas.plan import CreateWorkflowFromGoal, ParseInstruction, PlanFailed, PlanGenerated
from libs.events.schemas.workflow import CreateWorkflow
from libs.events.store import CommandAlreadyProcessed, EventStore
from services.planner import domain
from services.planner.planning import Planner, PlanningFailed, PlanResult

PLANNING_COMMANDS = (ParseInstruction, CreateWorkflowFromGoal)


async def handle_workflow_command(store: EventStore, envelope: CommandEnvelope) -> Outcome:
    command = envelope.command
    return await handle_command(
        store,
        envelope,
        f"workflow-{command.workflow_id}",
        domain.initial,
        domain.evolve,
        domain.decide,
        status=201 if isinstance(command, CreateWorkflow) else 200,
    )


def plan_generated(plan_id: uuid.UUID, workflow_id: uuid.UUID | None, goal: str, result: PlanResult, at) -> PlanGenerated:
    """The event recording a planning result: every result field, plus where it belongs and when."""
    return PlanGenerated(plan_id=plan_id, workflow_id=workflow_id, goal=goal, at=at, **msgspec.structs.asdict(result))


async def _record_failure(store: EventStore, envelope: CommandEnvelope, plan_id: uuid.UUID, workflow_id, goal: str,
                          failed: PlanningFailed, field: str) -> Outcome:
    event = PlanFailed(plan_id=plan_id, workflow_id=workflow_id, goal=goal, reason=failed.message,
                       defects=failed.defects, model=failed.model, prompt_tokens=failed.prompt_tokens,
                       completion_tokens=failed.completion_tokens, latency_ms=round(failed.latency_ms, 3),
                       at=envelope.command.at)
    try:
        return await store.append(f"plan-{plan_id}", 0, [event], metadata=metadata_for(envelope),
                                  status=failed.status, error=failed.message, field=field)
    except CommandAlreadyProcessed as done:
        return done.outcome


async def _free_name(store: EventStore, tenant_id: str, name: str) -> str:
    """Names come from the model; a clash with an existing workflow gets a numeric suffix, not a 409."""
    async with store.tenant_transaction(tenant_id) as conn:
        taken = {r["name"] for r in await conn.fetch(
            "SELECT name FROM workflows WHERE tenant_id = $1 AND (name = $2 OR name LIKE $3)",
            tenant_id, name, name.replace("%", r"\%").replace("_", r"\_") + " (%)")}
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name} ({n})"
    return candidate


async def _plan(store: EventStore, planner: Planner, envelope: CommandEnvelope, goal: str,
                tools: list[str] | None) -> PlanResult | Outcome:
    """A cache hit, else the recorded outcome of a redelivered command (the model is never asked twice),
    else a fresh plan. Appending a cache hit for a processed command is harmless: the append is idempotent."""
    hit = await planner.cached(envelope.tenant_id, goal, tools)
    if hit is not None:
        return hit
    done = await store.outcome(envelope.tenant_id, envelope.command_id)
    if done is not None:
        return done
    return await planner.plan(envelope.tenant_id, goal, tools, check_cache=False)


async def handle_planning_command(store: EventStore, planner: Planner, envelope: CommandEnvelope) -> Outcome:
    command = envelope.command
    if isinstance(command, ParseInstruction):
        try:
            result = await _plan(store, planner, envelope, command.instruction, command.available_tools)
        except PlanningFailed as failed:
            return await _record_failure(store, envelope, command.plan_id, None, command.instruction, failed,
                                         "instruction")
        if isinstance(result, Outcome):
            return result
        event = plan_generated(command.plan_id, None, command.instruction, result, command.at)
        try:
            return await store.append(f"plan-{command.plan_id}", 0, [event], metadata=metadata_for(envelope))
        except CommandAlreadyProcessed as dup:
            return dup.outcome
    try:
        result = await _plan(store, planner, envelope, command.goal, command.available_tools)
    except PlanningFailed as failed:
        return await _record_failure(store, envelope, command.workflow_id, command.workflow_id, command.goal,
                                     failed, "goal")
    if isinstance(result, Outcome):
        return result
    plan = plan_generated(command.workflow_id, command.workflow_id, command.goal, result, command.at)
    name = await _free_name(store, envelope.tenant_id, result.name)
    return await handle_command(
        store, envelope, f"workflow-{command.workflow_id}", domain.initial, domain.evolve,
        lambda cmd, state: domain.decide_planned(cmd, plan, name, state), status=201,
    )
