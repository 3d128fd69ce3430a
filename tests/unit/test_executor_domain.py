"""The run decider and next_actions (first action), given/when/then: given run events, when a command or a tick, then
events, an error, or the next action."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import reduce
from uuid import uuid4

import pytest

from libs.domain.definition import topological_order
from libs.events.errors import DomainError
from libs.events.schemas.run import (
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    StartRun,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from services.executor.domain import (
    Begin,
    Execute,
    Fail,
    Finish,
    Run,
    StepState,
    decide,
    evolve,
    initial,
    next_actions,
    run_outputs,
)

AT = datetime(2024, 1, 1, tzinfo=UTC)
RID, WID = uuid4(), uuid4()
A = {"id": "a", "type": "echo"}
B = {"id": "b", "type": "transform", "input_from": "a"}
CHAIN = {"nodes": [A, B]}


def next_action(run: Run):
    """The first action the engine would take now, with nothing in flight in this process."""
    plan = next_actions(run, AT)
    return plan.actions[0] if plan.actions else None


def given(*events) -> Run:
    return reduce(evolve, events, initial)


def run_created(definition=CHAIN, inputs=None) -> RunCreated:
    return RunCreated(
        run_id=RID, workflow_id=WID, workflow_version=1, definition=definition, inputs=inputs or {},
        created_by="alice", at=AT,
    )


def start_run(definition=CHAIN) -> StartRun:
    return StartRun(
        run_id=RID, workflow_id=WID, workflow_version=1, definition=definition, inputs={"x": 1},
        created_by="alice", at=AT,
    )


def started() -> RunStarted:
    return RunStarted(run_id=RID, at=AT)


def step_started(sid: str, attempt: int = 1) -> StepStarted:
    return StepStarted(run_id=RID, step_id=sid, attempt=attempt, at=AT)


def step_done(sid: str, output=None, attempt: int = 1) -> StepCompleted:
    return StepCompleted(run_id=RID, step_id=sid, attempt=attempt, output=output, at=AT)


def step_failed(sid: str, error: str = "boom", attempt: int = 1) -> StepFailed:
    return StepFailed(run_id=RID, step_id=sid, attempt=attempt, error=error, at=AT)


# --- decide ---------------------------------------------------------------------------------------------


def test_start_run_on_new_stream_emits_run_created():
    assert decide(start_run(), given()) == [
        RunCreated(
            run_id=RID, workflow_id=WID, workflow_version=1, definition=CHAIN, inputs={"x": 1},
            created_by="alice", at=AT,
        )
    ]


def test_start_run_twice_is_409():
    state = given(*decide(start_run(), given()))
    with pytest.raises(DomainError) as info:
        decide(start_run(), state)
    assert info.value.status == 409


def test_unknown_command_is_400():
    with pytest.raises(DomainError) as info:
        decide(object(), given())
    assert info.value.status == 400


# --- evolve ---------------------------------------------------------------------------------------------


def test_evolve_folds_run_and_step_lifecycle():
    state = given(run_created(inputs={"x": 1}))
    assert (state.exists, state.status, state.inputs, state.definition) == (True, "pending", {"x": 1}, CHAIN)
    state = reduce(evolve, [started(), step_started("a"), step_done("a", {"v": 1})], state)
    assert state.status == "running"
    assert state.steps == {"a": StepState(status="completed", attempt=1, output={"v": 1})}
    state = reduce(evolve, [step_started("b", 2), step_failed("b", "bad", 2)], state)
    assert state.steps["b"] == StepState(status="failed", attempt=2, error="bad")


def test_evolve_does_not_mutate_the_previous_state():
    before = given(run_created(), started())
    after = evolve(before, step_started("a"))
    assert before.steps == {} and "a" in after.steps


# --- next_action: the happy path of a two-step chain ----------------------------------------------------


def test_next_action_walks_a_two_step_chain():
    history = [run_created()]
    assert next_action(given(*history)) == Begin()

    history.append(started())
    assert next_action(given(*history)) == Execute(A, 1)

    history += [step_started("a"), step_done("a", {"from_a": 1})]
    assert next_action(given(*history)) == Execute(B, 1)

    history += [step_started("b"), step_done("b", {"result": 42})]
    assert next_action(given(*history)) == Finish({"result": 42})


def test_next_action_is_none_before_the_run_exists():
    assert next_action(given()) is None


@pytest.mark.parametrize(
    "end", [RunCompleted(run_id=RID, outputs={}, at=AT), RunFailed(run_id=RID, error="x", at=AT)],
    ids=["completed", "failed"],
)
def test_terminal_run_has_nothing_to_do(end):
    assert next_action(given(run_created(), started(), step_started("a"), end)) is None


def test_a_run_with_no_steps_finishes_at_once_with_no_outputs():
    assert next_action(given(run_created({"nodes": []}), started())) == Finish({})


# --- next_action: failure and crash ---------------------------------------------------------------------


def test_failed_step_fails_the_run_naming_the_step():
    action = next_action(given(run_created(), started(), step_started("a"), step_failed("a", "kaput")))
    assert isinstance(action, Fail)
    assert "a" in action.error and "kaput" in action.error
    assert action == Fail("Step a failed: kaput")


def test_step_left_running_by_a_crash_is_retried_with_the_next_attempt():
    state = given(run_created(), started(), step_started("a", attempt=1))
    assert next_action(state) == Execute(A, 2)
    state = evolve(state, step_started("a", attempt=2))
    assert next_action(state) == Execute(A, 3)


def test_crashed_step_is_retried_alongside_newly_ready_steps():
    independent = {"nodes": [{"id": "x", "type": "echo"}, {"id": "y", "type": "echo"}]}
    state = given(run_created(independent), started(), step_started("y"))
    assert next_actions(state, AT).actions == [Execute({"id": "x", "type": "echo"}, 1),
                                               Execute({"id": "y", "type": "echo"}, 2)]
    # The same step running in this very process is not a crash: nothing to redo.
    assert next_actions(state, AT, frozenset({"y"})).actions == [Execute({"id": "x", "type": "echo"}, 1)]


# --- next_action: ordering ------------------------------------------------------------------------------


def test_independent_steps_run_in_declaration_order():
    x, y, z = ({"id": i, "type": "echo"} for i in "xyz")
    history = [run_created({"nodes": [x, y, z]}), started()]
    assert next_action(given(*history)) == Execute(x, 1)
    history += [step_started("x"), step_done("x", 1)]
    assert next_action(given(*history)) == Execute(y, 1)
    history += [step_started("y"), step_done("y", 2)]
    assert next_action(given(*history)) == Execute(z, 1)
    history += [step_started("z"), step_done("z", 3)]
    assert next_action(given(*history)) == Finish({"x": 1, "y": 2, "z": 3})


def test_depends_on_holds_a_step_back_until_its_dependency_completes():
    # declared first, but it depends on a later step
    late = {"id": "late", "type": "echo", "depends_on": ["early"]}
    early = {"id": "early", "type": "echo"}
    history = [run_created({"nodes": [late, early]}), started()]
    assert next_action(given(*history)) == Execute(early, 1)
    history.append(step_started("early"))
    # early is running (as far as the log says); a crash retry, never `late`
    assert next_action(given(*history)) == Execute(early, 2)
    history.append(step_done("early", "ok"))
    assert next_action(given(*history)) == Execute(late, 1)


def test_step_with_several_dependencies_waits_for_all_of_them():
    p, q = {"id": "p", "type": "echo"}, {"id": "q", "type": "echo"}
    join = {"id": "join", "type": "transform", "input_from": ["p"], "depends_on": ["q"]}
    history = [run_created({"nodes": [join, p, q]}), started(), step_started("p"), step_done("p", 1)]
    assert next_action(given(*history)) == Execute(q, 1)
    history += [step_started("q"), step_done("q", 2)]
    assert next_action(given(*history)) == Execute(join, 1)


# --- run_outputs ----------------------------------------------------------------------------------------


def _finished(nodes, outputs) -> Run:
    events = [run_created({"nodes": nodes}), started()]
    for sid, out in outputs.items():
        events += [step_started(sid), step_done(sid, out)]
    return given(*events)


def test_run_outputs_merges_dict_outputs_of_terminal_steps_and_keys_the_rest_by_step_id():
    nodes = [
        {"id": "src", "type": "echo"},
        {"id": "d1", "type": "echo", "input_from": "src"},
        {"id": "d2", "type": "echo", "depends_on": ["src"]},
        {"id": "scalar", "type": "echo", "input_from": "src"},
        {"id": "listy", "type": "echo"},
    ]
    run = _finished(
        nodes, {"src": {"hidden": True}, "d1": {"k1": 1}, "d2": {"k2": 2}, "scalar": 7, "listy": [1, 2]}
    )
    assert run_outputs(run, topological_order(nodes)) == {"k1": 1, "k2": 2, "scalar": 7, "listy": [1, 2]}
    assert next_action(run) == Finish({"k1": 1, "k2": 2, "scalar": 7, "listy": [1, 2]})


def test_run_outputs_keys_a_none_output_by_step_id():
    nodes = [{"id": "only", "type": "noop"}]
    assert run_outputs(_finished(nodes, {"only": None}), nodes) == {"only": None}
