"""The step catalogue: every step type a workflow (and so a plan) may contain, with its config schema.

The executor implements these types (services/executor/steps.py); the planner builds the LLM's response
schema from them and validates untrusted plans against them. `outbound` steps send data outside Weft, so a
generated plan containing one always needs plan approval.
"""

from __future__ import annotations

from typing import Any

import msgspec


class StepType(msgspec.Struct, frozen=True, kw_only=True):
    action: str  # what a plan names: "email.send", "transform", ...
    node_type: str  # the v2 node `type`: integration, agent, condition, transform, ...
    description: str
    config: dict[str, Any]  # JSON schema of the step's config (strict-mode friendly: all keys required)
    outbound: bool = False
    llm: bool = False
    est_cost_usd: float = 0.0  # rough cost of one execution (LLM steps only)
    agent_name: str = "WorkflowAgent"  # the assistant surface's word for who runs it


def _obj(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


_STR = {"type": "string"}
_NULLABLE_STR = {"type": ["string", "null"]}
_ANY_JSON = {"type": ["string", "number", "boolean", "null", "object", "array"]}

CATALOG: dict[str, StepType] = {
    s.action: s
    for s in [
        StepType(action="transform", node_type="transform", agent_name="DataAgent",
                 description="Build a value from ${} templates over inputs and earlier outputs.",
                 config=_obj({"template": {"type": "object"}})),
        StepType(action="echo", node_type="echo", agent_name="DataAgent",
                 description="Pass the previous step's output on, or a fixed message.",
                 config=_obj({"message": _NULLABLE_STR})),
        StepType(action="condition", node_type="condition", agent_name="LogicAgent",
                 description="Continue only when a field compares true (equals, not_equals, contains, gt, lt, exists).",
                 config=_obj({"field": _STR, "operator": {"enum": ["equals", "not_equals", "contains", "gt", "lt", "exists"]},
                              "value": _ANY_JSON})),
        StepType(action="delay", node_type="delay", agent_name="SchedulerAgent",
                 description="Wait a number of seconds.",
                 config=_obj({"seconds": {"type": "integer", "minimum": 0, "maximum": 604800}})),
        StepType(action="approval", node_type="approval", agent_name="ApprovalAgent",
                 description="Pause until a person approves or rejects.",
                 config=_obj({"title": _STR, "description": _NULLABLE_STR})),
        StepType(action="agent", node_type="agent", agent_name="LLMAgent", llm=True, est_cost_usd=0.01,
                 description="Ask an LLM: summarise, draft, classify, extract. The prompt may use ${} templates.",
                 config=_obj({"prompt": _STR})),
        StepType(action="http.request", node_type="integration", agent_name="HttpAgent", outbound=True,
                 description="Call an HTTP endpoint.",
                 config=_obj({"method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]}, "url": _STR,
                              "body": _ANY_JSON})),
        StepType(action="email.send", node_type="integration", agent_name="EmailAgent", outbound=True,
                 description="Send an email.",
                 config=_obj({"to": _STR, "subject": _STR, "body": _STR})),
        StepType(action="slack.post_message", node_type="integration", agent_name="SlackAgent", outbound=True,
                 description="Post a message to a Slack channel (incoming webhook).",
                 config=_obj({"channel": _STR, "message": _STR})),
    ]
}


def step_type(node: dict[str, Any]) -> StepType | None:
    """The catalogue entry of a definition node: integrations by `action`, the rest by `type`."""
    key = node.get("action") if node.get("type") == "integration" else node.get("type")
    return CATALOG.get(key) if isinstance(key, str) else None


def assistant_steps(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """A definition's steps in the assistant contract's words: id, agentName, action, description, dependencies."""
    from libs.domain.definition import dependencies

    steps = []
    for node in definition.get("nodes", []):
        entry = step_type(node)
        steps.append({
            "id": node["id"],
            "agentName": entry.agent_name if entry else "WorkflowAgent",
            "action": node.get("action") or node["type"],
            "description": node.get("description") or (entry.description if entry else ""),
            "dependencies": dependencies(node),
        })
    return steps
