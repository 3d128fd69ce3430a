"""The workflow decider: pure, no I/O. Ids, `at` and planning results arrive from outside."""

from __future__ import annotations

import msgspec

from libs.domain.definition import validate_definition
from libs.events.errors import DomainError
from libs.events.schemas import Event
from libs.events.schemas.plan import (
    ApprovePlan,
    CreateWorkflowFromGoal,
    PlanApprovalRequested,
    PlanApproved,
    PlanGenerated,
    PlanRevised,
    ReviseWorkflowPlan,
)
from libs.events.schemas.workflow import (
    CreateWorkflow,
    DeleteWorkflow,
    UpdateWorkflow,
    WorkflowCreated,
    WorkflowDeleted,
    WorkflowUpdated,
)
from services.planner.validation import outbound_steps, plan_hash, to_definition, validate_plan, estimated_cost

STATUSES = ("active", "archived")


class Workflow(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    deleted: bool = False
    name: str = ""
    status: str = ""
    plan_version: int = 0
    plan_hash: str = ""
    used_tokens: frozenset = frozenset()  # approval-link token ids already spent on this workflow


initial = Workflow()


def evolve(state: Workflow, event: Event) -> Workflow:
    match event:
        case WorkflowCreated(name=name, status=status):
            return msgspec.structs.replace(state, exists=True, name=name, status=status)
        case WorkflowUpdated() as e:
            return msgspec.structs.replace(
                state,
                name=state.name if e.name is msgspec.UNSET else e.name,
                status=state.status if e.status is msgspec.UNSET else e.status,
            )
        case WorkflowDeleted():
            return msgspec.structs.replace(state, deleted=True)
        case PlanGenerated(plan_version=version, plan_hash=digest) | PlanRevised(plan_version=version, plan_hash=digest):
            return msgspec.structs.replace(state, plan_version=version, plan_hash=digest)
        case PlanApproved(token_id=token_id):
            used = state.used_tokens | {token_id} if token_id else state.used_tokens
            return msgspec.structs.replace(state, status="active", used_tokens=used)
    return state


def _live(state: Workflow) -> None:
    if not state.exists or state.deleted:
        raise DomainError(404, "Workflow not found")


def decide(command, state: Workflow) -> list[Event]:
    match command:
        case CreateWorkflow() as c:
            if state.exists:
                raise DomainError(409, "Workflow already exists")
            validate_definition(c.definition)
            return [
                WorkflowCreated(
                    workflow_id=c.workflow_id, name=c.name, description=c.description, definition=c.definition,
                    version=c.version, created_by=c.created_by, at=c.at,
                )
            ]
        case UpdateWorkflow() as c:
            _live(state)
            if c.definition is not msgspec.UNSET:
                validate_definition(c.definition)
            if c.status is not msgspec.UNSET and c.status not in STATUSES:
                raise DomainError(400, "status must be one of: active, archived", "status")
            if state.status == "draft" and c.status == "active":
                raise DomainError(409, "A draft workflow is activated by approving its plan", "status")
            return [
                WorkflowUpdated(
                    workflow_id=c.workflow_id, name=c.name, description=c.description, definition=c.definition,
                    version=c.version, status=c.status, at=c.at,
                )
            ]
        case DeleteWorkflow() as c:
            _live(state)
            return [WorkflowDeleted(workflow_id=c.workflow_id, at=c.at)]
        case ReviseWorkflowPlan() as c:
            _live(state)
            if state.status != "draft":
                raise DomainError(409, f"Only draft workflows can be edited; this one is {state.status}", "status")
            plan = {"name": state.name, "description": "", "confidence": 1.0, "schedule": None, "steps": c.steps}
            defects = validate_plan(plan, None)
            if defects:
                raise DomainError(422, "; ".join(defects), "steps")
            definition = to_definition(plan)
            digest = plan_hash(definition)
            if digest == state.plan_hash:
                return []  # nothing changed: same plan, same version
            version = state.plan_version + 1
            return [
                PlanRevised(workflow_id=c.workflow_id, plan_version=version, plan_hash=digest, definition=definition,
                            revised_by=c.revised_by, at=c.at),
                PlanApprovalRequested(workflow_id=c.workflow_id, plan_version=version, plan_hash=digest,
                                      requested_by=c.revised_by, outbound_steps=outbound_steps(definition),
                                      est_cost_usd=estimated_cost(definition), at=c.at,
                                      requester_email=c.requester_email),
            ]
        case ApprovePlan() as c:
            return _approve(c, state)
    raise DomainError(400, f"unknown command {type(command).__name__}")


def _approve(c: ApprovePlan, state: Workflow) -> list[Event]:
    """Activate a draft through its approval link: the link is bound to one plan version's hash, so an
    approval of an older version can never activate a plan edited since."""
    if c.token_id is not None and c.token_id in state.used_tokens:
        raise DomainError(400, "This approval link was already used (reused token)", "token")
    _live(state)
    if state.status != "draft":
        raise DomainError(409, f"Workflow is already {state.status}; only a draft's plan can be approved", "status")
    if c.plan_hash != state.plan_hash:
        raise DomainError(400, f"This link approves plan version {c.plan_version}, but the plan was changed since "
                               f"(now version {state.plan_version}); use the newest approval email", "token")
    return [PlanApproved(workflow_id=c.workflow_id, plan_version=c.plan_version, plan_hash=c.plan_hash,
                         approved_by=c.approved_by, token_id=c.token_id, client_ip=c.client_ip,
                         user_agent=c.user_agent, via=c.via, at=c.at)]


def decide_planned(command: CreateWorkflowFromGoal, plan: PlanGenerated, name: str, state: Workflow) -> list[Event]:
    """A workflow from a planning result: a draft awaiting plan approval, or (assistant, nothing outbound)
    active at once. Outbound steps in a generated plan always need approval."""
    if state.exists:
        raise DomainError(409, "Workflow already exists")
    status = "active" if command.activate_if_safe and not plan.outbound_steps else "draft"
    events: list[Event] = [
        WorkflowCreated(
            workflow_id=command.workflow_id, name=name, description=plan.description, definition=plan.definition,
            status=status, created_by=command.created_by, at=command.at, goal=command.goal,
            schedule=command.schedule or plan.schedule, source=command.source,
            quick_action_id=command.quick_action_id,
        ),
        plan,
    ]
    if status == "draft":
        events.append(PlanApprovalRequested(
            workflow_id=command.workflow_id, plan_version=plan.plan_version, plan_hash=plan.plan_hash,
            requested_by=command.created_by, outbound_steps=plan.outbound_steps, est_cost_usd=plan.est_cost_usd,
            at=command.at, requester_email=command.requester_email,
        ))
    return events
