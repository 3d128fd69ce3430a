"""Assistant use cases: a natural-language command becomes a planned workflow that runs at once when its plan
sends nothing outside Weft (otherwise it waits for plan approval). Execute and rerun both come through here."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from litestar import Request, Response

from libs.domain.catalog import assistant_steps, connections_needed
from libs.events.bus import CommandNotAccepted
from libs.events.db import DB_UNAVAILABLE
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.schemas.plan import CreateWorkflowFromGoal
from libs.security.auth import Principal
from services.gateway.commands import entity_id, now
from services.gateway.core import Core, connections, runs, workflows
from services.gateway.core.errors import ApiError

log = structlog.get_logger()
MIN_COMMAND_LENGTH = 10
AWAITING_PLAN_APPROVAL = "awaiting_plan_approval"


class Planned(msgspec.Struct, frozen=True, kw_only=True):
    """A command's planned workflow: its steps in A's words, and whether (and as which run) it started."""

    workflow: workflows.Workflow
    steps: list[dict[str, Any]]
    status: str  # awaiting_plan_approval | running | starting (the run's start is not confirmed yet)
    run_id: uuid.UUID | None = None


def check_command(raw: str, field: str = "command") -> str:
    command = raw.strip()
    if len(command) < MIN_COMMAND_LENGTH:
        raise ApiError(400, f"{field} must be at least {MIN_COMMAND_LENGTH} characters", field)
    return command


async def _start_if_active(core: Core, principal: Principal, outcome: Outcome, workflow: workflows.Workflow
                           ) -> Planned:
    steps = assistant_steps(workflow.definition)
    if workflow.status != "active":
        return Planned(workflow=workflow, steps=steps, status=AWAITING_PLAN_APPROVAL)
    # The run's command id derives from the planning command's, so a retried request starts one run.
    run_command_id = uuid.uuid5(outcome.command_id, "run")
    envelope = CommandEnvelope(
        command_id=run_command_id, tenant_id=principal.tenant_id, actor=principal.user_id,
        correlation_id=str(outcome.command_id),
        command=runs.prepare_start(workflow, {}, principal.user_id)(run_command_id), issued_at=now())
    try:
        started = await core.bus.send("executor", envelope) or await core.store.outcome(
            principal.tenant_id, run_command_id)
    except (CommandNotAccepted, *DB_UNAVAILABLE) as exc:
        # The workflow is committed; only the run's start is unknown. Saying "starting" (with the run id a
        # retry of this request would reuse) is true; a 503 would invite a retry that plans again.
        log.warning("assistant_run_start_unknown", error=f"{type(exc).__name__}: {exc}")
        started = None
    return Planned(workflow=workflow, steps=steps, run_id=entity_id(run_command_id),
                   status="running" if started is not None else "starting")


async def plan_and_run(core: Core, request: Request, principal: Principal, command: str,
                       render: Callable[[Planned], Awaitable[tuple[int, Any]]], *, body: bytes = b"",
                       quick_action_id: str | None = None, shape=None) -> Response:
    """Plan `command` as a new assistant workflow and start it if its plan is safe to run unattended."""

    def make(command_id: uuid.UUID) -> CreateWorkflowFromGoal:
        return CreateWorkflowFromGoal(workflow_id=entity_id(command_id), goal=command, activate_if_safe=True,
                                      source="assistant", created_by=principal.user_id, at=now(),
                                      requester_email=principal.email, quick_action_id=quick_action_id)

    async def on_planned(outcome: Outcome):
        workflow = await workflows.get(core, principal, runs.run_id_of(outcome))
        # Which accounts a command needs is known only once it is planned: checked per plan (decision 0073).
        await connections.require_usable(core, principal, connections_needed(workflow.definition))
        return await render(await _start_if_active(core, principal, outcome, workflow))

    return await core.dispatcher.dispatch(request, principal, "planner", make, on_planned, body,
                                          timeout_s=core.settings.planning_timeout_s, shape=shape)
