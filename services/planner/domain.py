"""The workflow decider: pure, no I/O. Ids and `at` arrive with the command."""

from __future__ import annotations

import msgspec

from libs.events.definition import validate_definition
from libs.events.errors import DomainError
from libs.events.schemas import Event
from libs.events.schemas.workflow import (
    CreateWorkflow,
    DeleteWorkflow,
    UpdateWorkflow,
    WorkflowCreated,
    WorkflowDeleted,
    WorkflowUpdated,
)

STATUSES = ("active", "archived")


class Workflow(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    deleted: bool = False
    name: str = ""
    status: str = ""


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
            return [
                WorkflowUpdated(
                    workflow_id=c.workflow_id, name=c.name, description=c.description, definition=c.definition,
                    version=c.version, status=c.status, at=c.at,
                )
            ]
        case DeleteWorkflow() as c:
            _live(state)
            return [WorkflowDeleted(workflow_id=c.workflow_id, at=c.at)]
    raise DomainError(400, f"unknown command {type(command).__name__}")
