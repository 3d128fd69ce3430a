"""Workflow definitions: structural validation and step order, shared by the gateway, planner and executor."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from libs.events.errors import DomainError

MAX_NODES = 200


def _deps(node: dict[str, Any]) -> list[str]:
    deps: list[str] = []
    source = node.get("input_from")
    if isinstance(source, str):
        deps.append(source)
    elif isinstance(source, list):
        deps.extend(source)
    deps.extend(node.get("depends_on") or [])
    return list(dict.fromkeys(deps))


def validate_definition(definition: Any, field: str = "definition") -> list[dict[str, Any]]:
    """Check shape, unique ids, known references and acyclicity; return the nodes in topological order.

    Raises DomainError(400) naming the offending field.
    """
    if not isinstance(definition, dict):
        raise DomainError(400, f"{field} must be an object", field)
    nodes = definition.get("nodes")
    if not isinstance(nodes, list):
        raise DomainError(400, f"{field}.nodes must be an array", f"{field}.nodes")
    if len(nodes) > MAX_NODES:
        raise DomainError(400, f"{field}.nodes has {len(nodes)} steps; at most {MAX_NODES} allowed", f"{field}.nodes")
    for key in ("inputs", "outputs"):
        if key in definition and not isinstance(definition[key], dict):
            raise DomainError(400, f"{field}.{key} must be an object", f"{field}.{key}")
    ids: dict[str, int] = {}
    for i, node in enumerate(nodes):
        where = f"{field}.nodes[{i}]"
        if not isinstance(node, dict):
            raise DomainError(400, f"{where} must be an object", where)
        node_id, node_type = node.get("id"), node.get("type")
        if not isinstance(node_id, str) or not node_id:
            raise DomainError(400, f"{where}.id must be a non-empty string", f"{where}.id")
        if not isinstance(node_type, str) or not node_type:
            raise DomainError(400, f"{where}.type must be a non-empty string", f"{where}.type")
        if node_id in ids:
            raise DomainError(400, f"{where}.id {node_id!r} is used twice", f"{where}.id")
        if "config" in node and not isinstance(node["config"], dict):
            raise DomainError(400, f"{where}.config must be an object", f"{where}.config")
        source, depends = node.get("input_from"), node.get("depends_on")
        if source is not None and not (
            isinstance(source, str) or (isinstance(source, list) and all(isinstance(s, str) for s in source))
        ):
            raise DomainError(400, f"{where}.input_from must be a step id or a list of them", f"{where}.input_from")
        if depends is not None and not (isinstance(depends, list) and all(isinstance(s, str) for s in depends)):
            raise DomainError(400, f"{where}.depends_on must be a list of step ids", f"{where}.depends_on")
        ids[node_id] = i
    for i, node in enumerate(nodes):
        for dep in _deps(node):
            if dep not in ids:
                raise DomainError(400, f"{field}.nodes[{i}] refers to unknown step {dep!r}", f"{field}.nodes[{i}]")
    return topological_order(nodes, field)


def topological_order(nodes: list[dict[str, Any]], field: str = "definition") -> list[dict[str, Any]]:
    """Kahn's algorithm, stable in declaration order; a cycle is a 400 naming a step on it."""
    by_id = {n["id"]: n for n in nodes}
    pending = {n["id"]: set(_deps(n)) for n in nodes}
    order: list[dict[str, Any]] = []
    while pending:
        ready = [nid for nid, deps in pending.items() if not deps]
        if not ready:
            stuck = next(iter(pending))
            raise DomainError(400, f"{field}.nodes form a cycle through step {stuck!r}", f"{field}.nodes")
        for nid in ready:
            order.append(by_id[nid])
            del pending[nid]
        for deps in pending.values():
            deps.difference_update(ready)
    return order


def dependencies(node: dict[str, Any]) -> list[str]:
    return _deps(node)


def plan_hash(definition: dict[str, Any]) -> str:
    """A stable hash of a plan's definition; plan and step approvals bind to it."""
    return "sha256:" + hashlib.sha256(msgspec.json.encode(definition, order="sorted")).hexdigest()
