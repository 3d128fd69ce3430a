"""The workflow decider, given/when/then: given past events, when a command, then new events or an error."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import reduce
from uuid import uuid4

import msgspec
import pytest

from libs.events.errors import DomainError
from libs.events.schemas.workflow import (
    CreateWorkflow,
    DeleteWorkflow,
    UpdateWorkflow,
    WorkflowCreated,
    WorkflowDeleted,
    WorkflowUpdated,
)
from services.planner.domain import Workflow, decide, evolve, initial

AT = datetime(2024, 1, 1, tzinfo=UTC)
WID = uuid4()
DEFINITION = {"nodes": [{"id": "a", "type": "echo"}, {"id": "b", "type": "transform", "input_from": "a"}]}


def given(*events) -> Workflow:
    return reduce(evolve, events, initial)


def when(state: Workflow, command):
    return decide(command, state)


def refused(state: Workflow, command) -> DomainError:
    with pytest.raises(DomainError) as info:
        decide(command, state)
    return info.value


def created(**kw) -> WorkflowCreated:
    return WorkflowCreated(
        **({"workflow_id": WID, "name": "wf", "definition": DEFINITION, "created_by": "alice", "at": AT} | kw)
    )


def create(**kw) -> CreateWorkflow:
    return CreateWorkflow(
        **({"workflow_id": WID, "name": "wf", "definition": DEFINITION, "created_by": "alice", "at": AT} | kw)
    )


def update(**kw) -> UpdateWorkflow:
    return UpdateWorkflow(**({"workflow_id": WID, "at": AT} | kw))


def delete() -> DeleteWorkflow:
    return DeleteWorkflow(workflow_id=WID, at=AT)


# --- create ---------------------------------------------------------------------------------------------


def test_create_on_new_stream_emits_workflow_created():
    events = when(given(), create(description="d", version="2.0.0"))
    assert events == [
        WorkflowCreated(
            workflow_id=WID, name="wf", description="d", definition=DEFINITION, version="2.0.0",
            created_by="alice", at=AT,
        )
    ]
    assert events[0].status == "active"


def test_create_on_existing_stream_is_409():
    err = refused(given(created()), create())
    assert err.status == 409


def test_create_on_deleted_stream_is_still_409():
    err = refused(given(created(), WorkflowDeleted(workflow_id=WID, at=AT)), create())
    assert err.status == 409


def test_create_with_invalid_definition_is_400_naming_the_field():
    err = refused(given(), create(definition={"nodes": [{"id": "a"}]}))
    assert (err.status, err.field) == (400, "definition.nodes[0].type")


# --- update / delete of what is not there ---------------------------------------------------------------


@pytest.mark.parametrize("command", [update(name="x"), delete()], ids=["update", "delete"])
def test_update_or_delete_of_missing_workflow_is_404(command):
    assert refused(given(), command).status == 404


@pytest.mark.parametrize("command", [update(name="x"), delete()], ids=["update", "delete"])
def test_update_or_delete_of_deleted_workflow_is_404(command):
    state = given(created(), WorkflowDeleted(workflow_id=WID, at=AT))
    assert refused(state, command).status == 404


# --- update ---------------------------------------------------------------------------------------------


def test_update_emits_only_the_fields_present():
    [event] = when(given(created()), update(name="renamed", status="archived"))
    assert event == WorkflowUpdated(workflow_id=WID, name="renamed", status="archived", at=AT)
    assert event.definition is msgspec.UNSET and event.description is msgspec.UNSET


def test_update_with_bad_status_is_400_on_status():
    err = refused(given(created()), update(status="paused"))
    assert (err.status, err.field) == (400, "status")


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        ({}, "definition.nodes"),
        ({"nodes": [{"id": "a", "type": "echo", "depends_on": ["ghost"]}]}, "definition.nodes[0]"),
        ({"nodes": [{"id": "a", "type": "echo", "config": "x"}]}, "definition.nodes[0].config"),
    ],
)
def test_update_with_invalid_definition_is_400_naming_the_field(definition, field):
    err = refused(given(created()), update(definition=definition))
    assert (err.status, err.field) == (400, field)


def test_update_with_valid_definition_is_accepted():
    new = {"nodes": [{"id": "only", "type": "noop"}]}
    [event] = when(given(created()), update(definition=new))
    assert event.definition == new


# --- delete ---------------------------------------------------------------------------------------------


def test_delete_of_live_workflow_emits_workflow_deleted():
    assert when(given(created()), delete()) == [WorkflowDeleted(workflow_id=WID, at=AT)]


def test_unknown_command_is_400():
    assert refused(given(), object()).status == 400


# --- evolve ---------------------------------------------------------------------------------------------


def test_evolve_folds_creation():
    assert given(created(name="wf")) == Workflow(exists=True, deleted=False, name="wf", status="active")


def test_evolve_folds_name_and_status_changes_and_keeps_unset_fields():
    state = given(
        created(name="wf"),
        WorkflowUpdated(workflow_id=WID, name="renamed", at=AT),
        WorkflowUpdated(workflow_id=WID, status="archived", at=AT),
    )
    assert (state.name, state.status) == ("renamed", "archived")


def test_evolve_folds_deletion():
    state = given(created(), WorkflowDeleted(workflow_id=WID, at=AT))
    assert state.exists and state.deleted


def test_initial_state_is_absent():
    assert not initial.exists and not initial.deleted
