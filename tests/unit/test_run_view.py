"""The run view fold: given run events, the state any surface shows at any version."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from libs.domain.run_view import fold_run
from libs.events.schemas.run import (
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunStarted,
    RunTerminated,
    StepAwaitingApproval,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepSkipped,
    StepStarted,
)
from libs.events.store import RecordedEvent

RUN, WF = uuid.uuid4(), uuid.uuid4()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEFINITION = {"nodes": [{"id": "a", "type": "transform"}, {"id": "b", "type": "echo", "input_from": "a"},
                        {"id": "c", "type": "echo"}]}


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def recorded(*events) -> list[RecordedEvent]:
    # Half carry the object, half only bytes, so both decoding paths of event_of are exercised.
    return [
        RecordedEvent(global_position=i, event_id=uuid.uuid4(), stream_id=f"run-{RUN}", version=i,
                      type=type(e).__name__, data=msgspec.json.encode(e), metadata={}, tenant_id="t",
                      recorded_at=at(i), event=e if i % 2 else None)
        for i, e in enumerate(events, start=1)
    ]


def created() -> RunCreated:
    return RunCreated(run_id=RUN, workflow_id=WF, workflow_version=1, definition=DEFINITION, inputs={"x": 1},
                      created_by="alice", at=at(0))


def test_created_run_is_pending_with_every_node_pending():
    view = fold_run(recorded(created()))
    assert (view.status, view.version, view.outputs, view.created_by) == ("pending", 1, None, "alice")
    assert {sid: n.state for sid, n in view.node_states.items()} == {"a": "PENDING", "b": "PENDING", "c": "PENDING"}
    assert view.logs == () and view.started_at == at(0)


def test_completed_run_has_outputs_variables_node_states_and_one_log_per_step_event():
    view = fold_run(recorded(
        created(), RunStarted(run_id=RUN, at=at(1)),
        StepStarted(run_id=RUN, step_id="a", attempt=1, at=at(2)),
        StepCompleted(run_id=RUN, step_id="a", output={"x": 1}, variables={"k": "v"}, at=at(3)),
        StepStarted(run_id=RUN, step_id="b", attempt=1, at=at(4)),
        StepCompleted(run_id=RUN, step_id="b", output={"x": 1}, variables={"k": "w", "j": 2}, at=at(5)),
        StepSkipped(run_id=RUN, step_id="c", reason="condition false", at=at(6)),
        RunCompleted(run_id=RUN, outputs={"x": 1}, at=at(7)),
    ))
    assert (view.status, view.outputs, view.finished_at, view.version) == ("completed", {"x": 1}, at(7), 8)
    assert view.variables == {"k": "w", "j": 2}
    a = view.node_states["a"]
    assert (a.state, a.started_at, a.completed_at, a.output, a.attempt) == ("COMPLETED", at(2), at(3), {"x": 1}, 1)
    assert view.node_states["c"].state == "SKIPPED"
    assert [(log.node_id, log.message) for log in view.logs] == [
        ("a", "Step started (attempt 1)"), ("a", "Step completed"), ("b", "Step started (attempt 1)"),
        ("b", "Step completed"), ("c", "Skipped: condition false")]


def test_retry_then_failure():
    view = fold_run(recorded(
        created(), RunStarted(run_id=RUN, at=at(1)),
        StepStarted(run_id=RUN, step_id="a", attempt=1, at=at(2)),
        StepRetryScheduled(run_id=RUN, step_id="a", attempt=1, error="503", retry_at=at(10), at=at(3)),
    ))
    a = view.node_states["a"]
    assert (view.status, a.state, a.error, a.attempt) == ("running", "PENDING", "503", 1)
    assert view.logs[-1].message.startswith("Retry scheduled at 2026-01-01T00:00:10.000Z")
    assert view.logs[-1].level == "warning"
    view = fold_run(recorded(
        created(), RunStarted(run_id=RUN, at=at(1)),
        StepStarted(run_id=RUN, step_id="a", attempt=2, at=at(10)),
        StepFailed(run_id=RUN, step_id="a", attempt=2, error="boom", at=at(11)),
    ))
    assert (view.node_states["a"].state, view.logs[-1].message, view.logs[-1].level) == (
        "FAILED", "Step failed: boom", "error")


def test_approval_pauses_until_the_step_resolves():
    events = [created(), RunStarted(run_id=RUN, at=at(1)), StepAwaitingApproval(run_id=RUN, step_id="a", at=at(2))]
    assert fold_run(recorded(*events)).status == "awaiting_approval"
    events.append(StepCompleted(run_id=RUN, step_id="a", output=True, at=at(3)))
    assert fold_run(recorded(*events)).status == "running"


def test_terminate_abandons_the_running_step_and_ignores_its_late_result():
    view = fold_run(recorded(
        created(), RunStarted(run_id=RUN, at=at(1)),
        StepStarted(run_id=RUN, step_id="a", attempt=1, at=at(2)),
        RunTerminated(run_id=RUN, reason="Stopped by user", at=at(3)),
        StepCompleted(run_id=RUN, step_id="a", output="late", at=at(4)),
    ))
    assert (view.status, view.error, view.finished_at) == ("cancelled", "Stopped by user", at(3))
    assert (view.node_states["a"].state, view.node_states["a"].output) == ("FAILED", None)
    assert view.node_states["b"].state == "PENDING" and view.version == 5


def test_cancelled_run():
    view = fold_run(recorded(created(), RunCancelled(run_id=RUN, reason="Cancelled by user", at=at(1))))
    assert (view.status, view.error) == ("cancelled", "Cancelled by user")


def test_no_events_is_no_run():
    assert fold_run([]).exists is False
