"""The step catalogue: every step type a workflow (and so a plan) may contain, with its config schema.

One entry per step type is the only definition of it: create/update validation (libs/domain/definition.py)
checks user definitions against `definition_schema`, the planner gives the LLM `plan_schema` (strict: every
key required, no extras) and validates plans against it, and the executor registers exactly one function
per entry (services/executor/steps.py; tests/unit/test_catalog.py checks both ways). `outbound` steps send
data outside Weft, so a generated plan containing one always needs plan approval.
"""

from __future__ import annotations

from typing import Any

import msgspec

_STR = {"type": "string"}
_NULLABLE_STR = {"type": ["string", "null"]}
_ANY_JSON = {"type": ["string", "number", "boolean", "null", "object", "array"]}
# An address (or a `${...}` that computes one, also inside a list).
_EMAIL = {"type": "string", "pattern": r"@|\$\{", "description": "an email address"}
_EMAILS = {"anyOf": [_EMAIL, {"type": "array", "items": _EMAIL}]}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_BOOL = {"type": "boolean"}
# A string holding a `${path}`: the value is computed when the step runs (libs/domain/definition.py).
TEMPLATE = {"type": "string", "pattern": r"\$\{[^}]+\}"}


class ConfigKey(msgspec.Struct, frozen=True, kw_only=True):
    """One key of a step's config. `schema` is what a user's definition may give; `plan` what the LLM's
    strict plan gives (True: the same schema; False: plans leave the key out)."""

    schema: dict[str, Any]
    required: bool = False  # a definition must give it
    template: bool = True  # a `${...}` string may stand for the value (the executor resolves it)
    plan: dict[str, Any] | bool = False


def _key(schema: dict[str, Any], *, required: bool = False, template: bool = True,
         plan: dict[str, Any] | bool = False) -> ConfigKey:
    return ConfigKey(schema=schema, required=required, template=template, plan=plan)


def _obj(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


class StepType(msgspec.Struct, frozen=True, kw_only=True):
    action: str  # what a plan names: "email.send", "transform", ...
    node_type: str  # the v2 node `type`: integration, agent, condition, transform, ...
    description: str
    config: dict[str, ConfigKey]
    open_config: bool = False  # keys beyond `config` are allowed (transform: the whole config is the value)
    plannable: bool = True  # offered to the LLM planner
    pauses: bool = False  # may pause the run (a wait, an approval): never a for_each row
    outbound: bool = False
    llm: bool = False
    est_cost_usd: float = 0.0  # rough cost of one execution (LLM steps only)
    agent_name: str = "WorkflowAgent"  # the assistant surface's word for who runs it
    connection: str | None = None  # the connected account (OAuth provider) it acts as: "google", "salesforce"

    @property
    def plan_schema(self) -> dict[str, Any]:
        """The config's JSON schema in an LLM plan (strict-mode shape: all keys required, none extra)."""
        return _obj({k: (c.schema if c.plan is True else c.plan) for k, c in self.config.items() if c.plan})

    @property
    def definition_schema(self) -> dict[str, Any]:
        """The config's JSON schema in a user's definition: optional keys may be left out, and where
        `template` is set a `${...}` string may stand for the value."""
        props = {k: c.schema if not c.template else {"anyOf": [c.schema, TEMPLATE]} for k, c in self.config.items()}
        return {"type": "object", "properties": props, "required": [k for k, c in self.config.items() if c.required],
                "additionalProperties": self.open_config}


_APPROVAL = {
    "title": _key(_STR, plan=True),
    "description": _key(_NULLABLE_STR, plan=True),
    "rows": _key({"type": "array"}),  # what is reviewed (default: the step's input)
    "display_fields": _key({"type": "array", "items": _STR}),
    "displayFields": _key({"type": "array", "items": _STR}),  # the public API's spelling
    "allow_bulk_approval": _key(_BOOL),
    "require_comment": _key(_BOOL),  # to approve or reject
    "approvers": _key(_EMAILS),  # default: the deployment's WEFT_APPROVAL_EMAIL
    "required_approvals": _key({"type": "integer", "minimum": 1}),
    "timeout_s": _key(_POSITIVE),
    "on_timeout": _key({"enum": ["reject", "approve", "escalate"]}),
    "escalate_to": _key(_EMAIL),
    "escalation_timeout_s": _key(_POSITIVE),
    "remind_before_s": _key({"anyOf": [_POSITIVE, {"type": "array", "items": _POSITIVE}]}),
}

CATALOG: dict[str, StepType] = {
    s.action: s
    for s in [
        StepType(action="transform", node_type="transform", agent_name="DataAgent", open_config=True,
                 description="Build a value from ${} templates over inputs and earlier outputs.",
                 config={"template": _key({}, plan={"type": "object"})}),
        StepType(action="echo", node_type="echo", agent_name="DataAgent",
                 description="Pass the previous step's output on, or a fixed message.",
                 config={"message": _key({}, plan=_NULLABLE_STR)}),
        StepType(action="noop", node_type="noop", agent_name="DataAgent", plannable=False,
                 description="Pass the previous step's output on (echo's other name).",
                 config={"message": _key({})}),
        StepType(action="condition", node_type="condition", agent_name="LogicAgent",
                 description="Continue only when a field compares true (equals, not_equals, contains, gt, lt, exists).",
                 config={"field": _key(_STR, required=True, plan=True),
                         "operator": _key({"enum": ["equals", "not_equals", "contains", "gt", "lt", "exists"]},
                                          required=True, template=False, plan=True),
                         "value": _key({}, plan=_ANY_JSON)}),
        StepType(action="delay", node_type="delay", agent_name="SchedulerAgent", pauses=True,
                 description="Wait a number of seconds.",
                 config={"seconds": _key({"type": "number", "minimum": 0, "maximum": 604800}, required=True,
                                         plan={"type": "integer", "minimum": 0, "maximum": 604800})}),
        StepType(action="approval", node_type="approval", agent_name="ApprovalAgent", pauses=True,
                 description="Pause until a person approves or rejects.", config=_APPROVAL),
        StepType(action="agent", node_type="agent", agent_name="LLMAgent", llm=True, est_cost_usd=0.01,
                 description="Ask an LLM: summarise, draft, classify, extract. The prompt may use ${} templates.",
                 config={"prompt": _key(_ANY_JSON, required=True, plan=_STR),
                         "agent_id": _key(_STR),  # a registered agent endpoint instead of the LLM
                         "model": _key(_STR)}),
        StepType(action="for_each", node_type="for_each", agent_name="DataAgent", plannable=False,
                 description="Run one step per row of a list; per-row results with success and failure counts.",
                 # `step` is a node without an id, checked against its own entry (libs/domain/definition.py);
                 # its templates are resolved per row, where ${item} and ${index} exist.
                 config={"items": _key({"type": "array"}, required=True),
                         "step": _key({"type": "object"}, required=True, template=False)}),
        StepType(action="http.request", node_type="integration", agent_name="HttpAgent", outbound=True,
                 description="Call an HTTP endpoint.",
                 config={"method": _key({"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
                                                  "get", "post", "put", "patch", "delete", "head", "options"]},
                                        plan={"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]}),
                         "url": _key(_STR, required=True, plan=True),
                         "body": _key({}, plan=_ANY_JSON),
                         "headers": _key({"type": "object"}),
                         "expected_status": _key({"anyOf": [{"type": "integer", "minimum": 100, "maximum": 599},
                                                            {"type": "array", "minItems": 1, "items": {
                                                                "type": "integer", "minimum": 100, "maximum": 599}}]})}),
        StepType(action="email.send", node_type="integration", agent_name="EmailAgent", outbound=True,
                 description="Send an email.",
                 config={"to": _key(_EMAILS, required=True, plan=_STR), "subject": _key(_STR, required=True, plan=True),
                         "body": _key({}, plan=_STR), "html": _key(_STR)}),
        StepType(action="slack.post_message", node_type="integration", agent_name="SlackAgent", outbound=True,
                 description="Post a message to a Slack channel (incoming webhook).",
                 config={"channel": _key(_STR, required=True, plan=True),
                         "message": _key(_ANY_JSON, required=True, plan=_STR),
                         "webhook_url": _key(_STR)}),
        # Steps that act as the user's connected account (docs/decisions/0072, 0073).
        StepType(action="gmail.search", node_type="integration", agent_name="EmailAgent", connection="google",
                 description="Search the user's Gmail (Gmail search syntax, e.g. is:unread) and return the messages.",
                 config={"query": _key(_STR, required=True, plan=True),
                         "max_results": _key({"type": "integer", "minimum": 1, "maximum": 50},
                                             plan={"type": "integer", "minimum": 1, "maximum": 50})}),
        StepType(action="gmail.get", node_type="integration", agent_name="EmailAgent", connection="google",
                 description="Read one Gmail message: headers and plain-text body.",
                 config={"message_id": _key(_STR, required=True, plan=True)}),
        StepType(action="gmail.send", node_type="integration", agent_name="EmailAgent", connection="google",
                 outbound=True, description="Send an email from the user's Gmail account.",
                 config={"to": _key(_EMAILS, required=True, plan=_STR), "subject": _key(_STR, required=True, plan=True),
                         "body": _key({}, required=True, plan=_STR)}),
        StepType(action="docs.create", node_type="integration", agent_name="DocsAgent", connection="google",
                 outbound=True, description="Create a Google Doc with a title and text.",
                 config={"title": _key(_STR, required=True, plan=True), "content": _key({}, plan=_STR)}),
        StepType(action="salesforce.query", node_type="integration", agent_name="CRMAgent", connection="salesforce",
                 description="Run a SOQL query against the user's Salesforce org and return the records.",
                 config={"query": _key(_STR, required=True, plan=True)}),
    ]
}
# What the LLM planner may use (the rest are for hand-written definitions).
PLAN_ACTIONS: tuple[str, ...] = tuple(a for a, s in CATALOG.items() if s.plannable)


def step_key(node: dict[str, Any]) -> str | None:
    """The catalogue (and registry) key of a node: integrations by `action`, the rest by `type` (their
    `action`, if any, is a label such as "check_status")."""
    key = node.get("action") if node.get("type") == "integration" else node.get("type")
    return key if isinstance(key, str) else None


def step_type(node: dict[str, Any]) -> StepType | None:
    """The catalogue entry of a definition node: integrations by `action`, the rest by `type`."""
    entry = CATALOG.get(step_key(node) or "")
    if entry is None or (node.get("type") == "integration") != (entry.node_type == "integration"):
        return None
    return entry


def dependencies(node: dict[str, Any]) -> list[str]:
    """The steps a node waits for: `input_from` (one id or a list) and `depends_on`, without repeats."""
    deps: list[str] = []
    source = node.get("input_from")
    if isinstance(source, str):
        deps.append(source)
    elif isinstance(source, list):
        deps.extend(source)
    deps.extend(node.get("depends_on") or [])
    return list(dict.fromkeys(deps))


def connections_needed(definition: dict[str, Any]) -> list[str]:
    """The connected accounts a definition's steps act as (for_each rows included), each once."""
    needed: list[str] = []
    for node in definition.get("nodes", []):
        for candidate in (node, (node.get("config") or {}).get("step")):
            entry = step_type(candidate) if isinstance(candidate, dict) else None
            if entry is not None and entry.connection and entry.connection not in needed:
                needed.append(entry.connection)
    return needed


def assistant_steps(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """A definition's steps in the assistant contract's words: id, agentName, action, description, dependencies."""
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
