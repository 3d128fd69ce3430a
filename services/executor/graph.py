"""A run definition's step graph (steps by id, topological order, each step's dependencies), computed once per
definition: the driver plans a run many times (every inline round, every wake-up) and records every step's
result, and recomputing these each time made a run's cost grow with the square of its steps (bench_growth.py,
docs/decisions/0036-cost-grows-with-work.md). Pure: a function of the definition only."""

from __future__ import annotations

from typing import Any

from libs.domain.definition import dependencies, topological_order

__all__ = ["Graph", "graph_of"]


class Graph:
    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes = nodes
        self.by_id: dict[str, dict[str, Any]] = {}
        for node in nodes:
            self.by_id.setdefault(node.get("id"), node)  # the first of a repeated id, as a scan finds it
        self._order: list[dict[str, Any]] | None = None
        self._entries: list[tuple[str, dict[str, Any], list[str]]] = []

    @property
    def order(self) -> list[dict[str, Any]]:
        """Topological order (raises DomainError on a cycle, as topological_order does, each time asked)."""
        if self._order is None:
            self._order = topological_order(self.nodes)
            self._entries = [(n["id"], n, dependencies(n)) for n in self._order]
        return self._order

    @property
    def entries(self) -> list[tuple[str, dict[str, Any], list[str]]]:
        """(step id, node, its dependencies) in topological order: what planning walks each round."""
        self.order  # noqa: B018 - computes both
        return self._entries


# Keyed by the identity of the definition's node list, which a folded run keeps (evolve never copies it). The
# entry holds the list, so its id cannot be reused while the entry lives. Bounded: the oldest entry goes first.
_GRAPHS: dict[int, Graph] = {}
_MAX = 1024
_NO_NODES: list[dict[str, Any]] = []


def graph_of(definition: dict[str, Any]) -> Graph:
    nodes = definition.get("nodes", _NO_NODES)
    graph = _GRAPHS.get(id(nodes))
    if graph is not None and graph.nodes is nodes:
        return graph
    graph = Graph(nodes)
    if len(_GRAPHS) >= _MAX:
        del _GRAPHS[next(iter(_GRAPHS))]
    _GRAPHS[id(nodes)] = graph
    return graph
