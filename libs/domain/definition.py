"""Workflow definitions: validation (structure, the step catalogue, storable text) and step order, shared by
the gateway, planner and executor."""

from __future__ import annotations

import hashlib
from typing import Any

import jsonschema
import msgspec

from libs.domain.catalog import CATALOG, ConfigKey, StepType, dependencies, step_key
from libs.events.errors import DomainError

MAX_NODES = 500  # docs/decisions/0036: planning a run is linear in its steps (bench/bench_growth.py)


def validate_definition(definition: Any, field: str = "definition") -> list[dict[str, Any]]:
    """Check shape, unique ids, each node against the step catalogue (known type or action, config
    matching its schema), storable text, known references and acyclicity; return the nodes in
    topological order.

    Raises DomainError(400) naming the offending field.
    """
    if not isinstance(definition, dict):
        raise DomainError(400, f"{field} must be an object", field)
    refuse_nul(definition, field)
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
        _check_step(node, where, f'{where} (id "{node_id}")')
    for i, node in enumerate(nodes):
        for dep in dependencies(node):
            if dep not in ids:
                raise DomainError(400, f"{field}.nodes[{i}] refers to unknown step {dep!r}", f"{field}.nodes[{i}]")
    return topological_order(nodes, field)


def refuse_nul(definition: Any, field: str) -> None:
    """Postgres cannot store U+0000 in text or jsonb: refuse it here, naming where it is, not at the append.
    A loop, not recursion: a deeply nested body must not end in a RecursionError (a 500)."""
    stack = [(definition, field)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise DomainError(400, f"{path} contains a NUL character (\\u0000), which cannot be stored", path)
        elif isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{_printable(key)}"
                if isinstance(key, str) and "\x00" in key:
                    raise DomainError(400, f"{where}: a name contains a NUL character (\\u0000), which cannot be "
                                           "stored", where)
                stack.append((item, where))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))


def _printable(key: Any) -> str:
    return str(key).replace("\x00", "\\u0000")


def _check_step(node: dict[str, Any], where: str, named: str) -> None:
    """The node's type (or, for integrations, its action) is in the catalogue and its config matches the
    entry's definition schema. `named` says which node, in the message."""
    key = step_key(node)
    entry = CATALOG.get(key or "")
    if node.get("type") == "integration":
        if entry is None or entry.node_type != "integration":
            what = f"unknown action {_quoted(key)}" if key is not None else "an integration needs an action"
            raise DomainError(400, f"{named}: {what}", f"{where}.action")
    elif entry is None:
        raise DomainError(400, f"{named}: unknown step type {_quoted(key)}", f"{where}.type")
    elif entry.node_type == "integration":
        raise DomainError(400, f'{named}: {key} is an integration: write "type": "integration", "action": '
                               f'"{key}"', f"{where}.type")
    config = node.get("config") or {}
    for name, spec in entry.config.items():
        if name not in config:
            if spec.required:
                raise DomainError(400, f"{named}: config.{name} is required by {entry.action}", f"{where}.config.{name}")
            continue
        problem = _value_problem(entry, name, spec, config[name])
        if problem:
            raise DomainError(400, f"{named}: config.{name}: {problem}", f"{where}.config.{name}")
    if not entry.open_config:
        for name in config:
            if name not in entry.config:
                known = ", ".join(entry.config) or "none"
                raise DomainError(400, f"{named}: config.{name} is not a setting of {entry.action} (known: {known})",
                                  f"{where}.config.{name}")
    if entry.action == "for_each":
        _check_row_step(config["step"], f"{where}.config.step", f"{named}: config.step")


def _check_row_step(sub: dict[str, Any], where: str, named: str) -> None:
    _check_step(sub, where, named)
    entry = CATALOG[step_key(sub) or ""]
    if entry.pauses:
        raise DomainError(400, f"{named}: a {entry.action} step cannot run once per row", f"{where}.type")


_VALIDATORS: dict[tuple[str, str], jsonschema.Draft202012Validator] = {}


def _value_problem(entry: StepType, name: str, spec: ConfigKey, value: Any) -> str | None:
    if spec.template and isinstance(value, str) and "${" in value:
        return None  # computed when the step runs; a path that does not resolve fails the step then
    validator = _VALIDATORS.get((entry.action, name))
    if validator is None:
        validator = _VALIDATORS[(entry.action, name)] = jsonschema.Draft202012Validator(spec.schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None and error.validator == "pattern" and "description" in error.schema:
        return f"{_quoted(error.instance)} is not {error.schema['description']}"  # not the regular expression
    return None if error is None else error.message


def _quoted(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def topological_order(nodes: list[dict[str, Any]], field: str = "definition") -> list[dict[str, Any]]:
    """Kahn's algorithm in layers (all steps ready at once, in declaration order, then those they unblock), a
    cycle is a 400 naming a step on it. Linear in steps + edges: the executor orders every run's steps, and a
    scan of every pending step per layer made a 300-step chain cost 300 times more per step than a 3-step one."""
    by_id = {n["id"]: n for n in nodes}
    index = {nid: i for i, nid in enumerate(by_id)}
    unmet: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    for nid, node in by_id.items():
        deps = set(dependencies(node))
        unmet[nid] = len(deps)  # an unknown or own id is never met: reported as a cycle, as before
        for dep in deps:
            dependents.setdefault(dep, []).append(nid)
    order: list[dict[str, Any]] = []
    ready = [nid for nid, count in unmet.items() if count == 0]
    while len(order) < len(unmet):
        if not ready:
            placed = {n["id"] for n in order}
            stuck = next(nid for nid in unmet if nid not in placed)
            raise DomainError(400, f"{field}.nodes form a cycle through step {stuck!r}", f"{field}.nodes")
        order.extend(by_id[nid] for nid in ready)
        unblocked = []
        for nid in ready:
            for child in dependents.get(nid, ()):
                unmet[child] -= 1
                if unmet[child] == 0:
                    unblocked.append(child)
        ready = sorted(unblocked, key=index.__getitem__)
    return order


def plan_hash(definition: dict[str, Any]) -> str:
    """A stable hash of a plan's definition; plan and step approvals bind to it."""
    return "sha256:" + hashlib.sha256(msgspec.json.encode(definition, order="sorted")).hexdigest()
