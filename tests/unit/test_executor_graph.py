"""A run's step graph is computed once per definition, however often the run is planned and its results recorded
(a chain of N steps is planned about N times: recomputing the order each time made a run cost N^2)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from libs.events.schemas.run import RunCreated
from services.executor import graph
from services.executor.domain import Execute, Finish, RecordStepResult, decide, evolve, initial, next_actions
from services.executor.effects import Completed

AT = datetime(2024, 1, 1, tzinfo=UTC)


def chain(n: int) -> dict:
    nodes = [{"id": "s0", "type": "noop"}]
    nodes += [{"id": f"s{i}", "type": "noop", "input_from": f"s{i - 1}"} for i in range(1, n)]
    return {"nodes": nodes}


def drive(definition: dict) -> int:
    """Plan and record a whole chain, one step at a time, as the driver does; returns the steps run."""
    rid = uuid4()
    run = evolve(initial, RunCreated(run_id=rid, workflow_id=uuid4(), workflow_version=1, definition=definition,
                                     inputs={}, created_by="alice", at=AT))
    done = 0
    while True:
        actions = next_actions(run, AT).actions
        if any(isinstance(a, Finish) for a in actions):
            return done
        starts = [a for a in actions if isinstance(a, Execute)]
        assert len(starts) == 1, actions
        sid = starts[0].node["id"]
        for event in decide(RecordStepResult(run_id=rid, step_id=sid, attempt=1, result=Completed(output=done),
                                             at=AT, jitter=0.0), run):
            run = evolve(run, event)
        done += 1


@pytest.fixture
def orders(monkeypatch) -> list[int]:
    """Counts topological orders computed (their node counts)."""
    seen: list[int] = []
    real = graph.topological_order

    def counting(nodes, *args, **kwargs):
        seen.append(len(nodes))
        return real(nodes, *args, **kwargs)

    monkeypatch.setattr(graph, "topological_order", counting)
    graph._GRAPHS.clear()
    return seen


def test_a_chain_is_ordered_once_however_many_steps_it_plans(orders):
    definition = chain(60)
    assert drive(definition) == 60
    assert orders == [60]
    assert drive(definition) == 60  # another run of the same definition object: still the cached graph
    assert orders == [60]


def test_an_equal_but_distinct_definition_gets_its_own_graph(orders):
    drive(chain(5))
    drive(chain(5))
    assert orders == [5, 5]


def test_the_cache_is_bounded(orders):
    kept = [chain(2) for _ in range(graph._MAX + 10)]
    for definition in kept:
        graph.graph_of(definition)
    assert len(graph._GRAPHS) == graph._MAX
