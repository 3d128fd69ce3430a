"""Creating workflows and starting runs from a person's form (the dashboard): the same rules and commands as
the API surfaces (goal length, definition checks, `runs.prepare_start`), answered with ids, not responses."""

from __future__ import annotations

import uuid
from typing import Any

from libs.events.schemas.plan import CreateWorkflowFromGoal
from libs.events.schemas.workflow import CreateWorkflow
from libs.security.auth import Principal
from services.gateway.commands import entity_id, now
from services.gateway.core import Core, runs
from services.gateway.core.commands import refused, send
from services.gateway.core.errors import ApiError
from services.gateway.core.workflows import Workflow, check_definition

MIN_GOAL, MAX_GOAL, MAX_NAME = 5, 10_000, 200


def _committed(outcome) -> uuid.UUID:
    error = refused(outcome, "Accepted; it is still being planned. Refresh the list in a moment")
    if error is not None:
        raise error
    return uuid.UUID(outcome.stream_id.split("-", 1)[1])


async def create_from_goal(core: Core, principal: Principal, goal: str, *, source: str = "console",
                           activate_if_safe: bool = False) -> uuid.UUID:
    """Plan a goal into a workflow: a draft whose plan is emailed for approval (or, for the assistant, active at
    once when nothing in it leaves Weft). The workflow's id."""
    goal = goal.strip()
    if not MIN_GOAL <= len(goal) <= MAX_GOAL:
        raise ApiError(400, f"goal must be {MIN_GOAL} to {MAX_GOAL} characters", "goal")
    outcome = await send(core, principal, "planner", lambda command_id: CreateWorkflowFromGoal(
        workflow_id=entity_id(command_id), goal=goal, source=source, activate_if_safe=activate_if_safe,
        created_by=principal.user_id, at=now(), requester_email=principal.email),
        timeout_s=core.settings.planning_timeout_s)
    return _committed(outcome)


async def create_from_definition(core: Core, principal: Principal, name: str, definition: Any,
                                 description: str | None = None) -> uuid.UUID:
    """A workflow from a definition, checked against the step catalogue (400 naming the node)."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise ApiError(400, f"name must be 1 to {MAX_NAME} characters", "name")
    check_definition(definition)
    outcome = await send(core, principal, "planner", lambda command_id: CreateWorkflow(
        workflow_id=entity_id(command_id), name=name, description=description, definition=definition,
        created_by=principal.user_id, at=now()))
    return _committed(outcome)


async def start_run(core: Core, principal: Principal, workflow: Workflow, inputs: dict[str, Any]) -> uuid.UUID:
    """Start a run as the person (only an active workflow runs; inputs checked); the run's id."""
    make = runs.prepare_start(workflow, inputs, principal.user_id)
    outcome = await send(core, principal, "executor", make)
    error = refused(outcome, "Accepted; the run is starting")
    if error is not None:
        raise error
    return runs.run_id_of(outcome)


async def stop_run(core: Core, principal: Principal, run: runs.Run) -> None:
    """Cancel: the running step finishes, nothing new starts (DESIGN 5)."""
    make = runs.stop_command(run.id, run.status, principal, terminate=False, reason="Cancelled from the dashboard",
                             word=run.status)
    error = refused(await send(core, principal, "executor", make))
    if error is not None:
        raise error
