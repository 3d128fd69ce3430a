"""Untrusted plans (LLM output, edited drafts) checked before they can become a workflow definition."""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from libs.domain.catalog import CATALOG, PLAN_ACTIONS, step_type
from libs.domain.definition import dependencies, plan_hash, refuse_nul, validate_definition  # noqa: F401 - plan_hash re-exported
from libs.events.errors import DomainError

MAX_PLAN_STEPS = 20
_TEMPLATE = re.compile(r"\$\{([^}]*)\}")


def step_schema(action: str) -> dict[str, Any]:
    entry = CATALOG[action]
    props = {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "action": {"const": action},
        "description": {"type": "string", "maxLength": 500},
        "input_from": {"type": ["string", "null"]},
        "depends_on": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_PLAN_STEPS},
        "config": entry.plan_schema,
    }
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def plan_schema(actions: list[str] | None = None) -> dict[str, Any]:
    """The JSON schema of a plan (strict-mode shape: every key required, no extra keys)."""
    actions = sorted(actions if actions is not None else PLAN_ACTIONS)
    props = {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": "string", "maxLength": 2000},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "schedule": {"type": ["string", "null"]},
        "steps": {"type": "array", "minItems": 1, "maxItems": MAX_PLAN_STEPS,
                  "items": {"anyOf": [step_schema(a) for a in actions]}},
    }
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


# The top level with `steps` as a plain array, then each step against its own action's schema: the
# per-step anyOf of the full schema gives unreadable errors, these name the step and the field.
_TOP_VALIDATOR = jsonschema.Draft202012Validator(
    {**plan_schema(), "properties": {**plan_schema()["properties"], "steps": {"type": "array"}}}
)
_STEP_VALIDATORS = {a: jsonschema.Draft202012Validator(step_schema(a)) for a in PLAN_ACTIONS}


def _schema_defects(plan: Any) -> list[str]:
    if not isinstance(plan, dict):
        return ["the plan must be a JSON object"]
    defects = [f"{'/'.join(str(p) for p in e.absolute_path) or 'plan'}: {e.message}"
               for e in _TOP_VALIDATOR.iter_errors(plan)]
    steps = plan.get("steps")
    if isinstance(steps, list):
        if not steps:
            defects.append("steps: at least one step is required")
        if len(steps) > MAX_PLAN_STEPS:
            defects.append(f"steps: {len(steps)} steps; at most {MAX_PLAN_STEPS} allowed")
        for i, step in enumerate(steps[:MAX_PLAN_STEPS]):
            action = step.get("action") if isinstance(step, dict) else None
            if not isinstance(action, str) or action not in _STEP_VALIDATORS:
                defects.append(f"steps/{i}/action: {action!r} is not a known step type")
                continue
            for error in _STEP_VALIDATORS[action].iter_errors(step):
                where = "/".join(str(p) for p in error.absolute_path)
                defects.append(f"steps/{i}{'/' + where if where else ''}: {error.message}")
    return defects[:10]


def _template_paths(value: Any) -> list[str]:
    if isinstance(value, str):
        return _TEMPLATE.findall(value)
    if isinstance(value, dict):
        return [p for v in value.values() for p in _template_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _template_paths(v)]
    return []


def _ancestors(nodes: list[dict[str, Any]]) -> dict[str, set[str]]:
    by_id = {n["id"]: n for n in nodes}
    memo: dict[str, set[str]] = {}

    def visit(node_id: str) -> set[str]:
        if node_id not in memo:
            memo[node_id] = set()
            for dep in dependencies(by_id[node_id]):
                memo[node_id] |= {dep} | visit(dep)
        return memo[node_id]

    return {n["id"]: visit(n["id"]) for n in nodes}


def to_definition(plan: dict[str, Any]) -> dict[str, Any]:
    """The workflow definition (v2 `nodes`) a validated plan becomes."""
    nodes = []
    for step in plan["steps"]:
        entry = CATALOG[step["action"]]
        node: dict[str, Any] = {"id": step["id"], "type": entry.node_type, "action": step["action"],
                                "description": step.get("description", ""), "config": step.get("config") or {}}
        if step.get("input_from"):
            node["input_from"] = step["input_from"]
        if step.get("depends_on"):
            node["depends_on"] = list(step["depends_on"])
        nodes.append(node)
    return {"nodes": nodes, "inputs": {}, "outputs": {}}


def validate_plan(plan: Any, allowed: set[str] | None) -> list[str]:
    """Every defect of a plan, each naming where it is; [] when the plan may become a workflow."""
    try:
        refuse_nul(plan, "plan")  # its name, description and steps are stored as text and jsonb
    except DomainError as exc:
        return [exc.message]
    defects = _schema_defects(plan)
    if defects:
        return defects
    steps = plan["steps"]
    for i, step in enumerate(steps):
        if allowed is not None and step["action"] not in allowed:
            defects.append(f"steps/{i}/action: {step['action']!r} is not an allowed tool "
                           f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
    definition = to_definition(plan)
    try:
        validate_definition(definition, field="plan")
    except DomainError as exc:
        defects.append(exc.message)
        return defects
    ancestors = _ancestors(definition["nodes"])
    for i, node in enumerate(definition["nodes"]):
        for path in _template_paths(node["config"]):
            root = path.strip().removeprefix("$.").split(".", 1)[0]
            if root == "inputs":
                continue
            if root == "input" and node.get("input_from"):
                continue
            if root == "steps" and "." in path:  # ${steps.<id>...}: the same check, on <id>
                root = path.strip().removeprefix("$.").split(".")[1]
            if root in ancestors[node["id"]]:
                continue
            defects.append(f"steps/{i}/config: ${{{path}}} refers to {root!r}, which is not an earlier step "
                           "this step depends on, nor inputs")
    return defects


def outbound_steps(definition: dict[str, Any]) -> list[str]:
    return [n["id"] for n in definition["nodes"] if (e := step_type(n)) and e.outbound]


def estimated_cost(definition: dict[str, Any]) -> float:
    return round(sum(e.est_cost_usd for n in definition["nodes"] if (e := step_type(n))), 4)
