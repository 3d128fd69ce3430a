"""The client's types against the gateway's served OpenAPI document: for every v2 operation the client reads,
the envelope field it picks must be the schema its Struct mirrors, with the same fields, compatible types, and
nothing the client requires that the gateway may omit. A field added, removed or retyped on either side fails."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from weft_client import types as t

# (method, path, success status, envelope field the client picks, the client's type)
OPERATIONS = [
    ("get", "/api/v2/workflows/health", "200", None, t.Health),
    ("get", "/api/v2/workflows", "200", "workflows", t.WorkflowSummary),
    ("post", "/api/v2/workflows", "201", "workflow", t.Workflow),
    ("get", "/api/v2/workflows/{workflow_id}", "200", "workflow", t.Workflow),
    ("patch", "/api/v2/workflows/{workflow_id}", "200", "workflow", t.Workflow),
    ("post", "/api/v2/workflows/parse", "200", "workflow", t.ParsedPlan),
    ("post", "/api/v2/workflows/{workflow_id}/execute", "201", "run", t.Run),
    ("get", "/api/v2/workflows/{workflow_id}/runs", "200", "runs", t.Run),
    ("get", "/api/v2/workflows/{workflow_id}/runs/{run_id}", "200", "run", t.Run),
    ("get", "/api/v2/workflows/commands/{command_id}", "200", "command", t.CommandState),
    ("post", "/api/v2/workflows/{workflow_id}/schedules", "201", "schedule", t.Schedule),
    ("get", "/api/v2/workflows/{workflow_id}/schedules", "200", "schedules", t.Schedule),
    ("get", "/api/v2/workflows/{workflow_id}/schedules/{schedule_id}", "200", "schedule", t.Schedule),
    ("patch", "/api/v2/workflows/{workflow_id}/schedules/{schedule_id}", "200", "schedule", t.Schedule),
    ("get", "/api/v2/workflows/{workflow_id}/schedules/{schedule_id}/occurrences", "200", "occurrences",
     t.Occurrence),
    ("get", "/api/v2/workflows/approvals", "200", "approvals", t.PendingApproval),
    ("post", "/api/v2/workflows/{workflow_id}/runs/{run_id}/approve", "200", "decision", t.Decision),
    ("post", "/api/v2/workflows/{workflow_id}/runs/{run_id}/reject", "200", "decision", t.Decision),
]
PAGED = {"workflows", "runs", "approvals"}  # read as a Page: the envelope must carry "count"


@pytest.fixture(scope="module")
def document(stack) -> dict[str, Any]:
    response = httpx.get(f"{stack.base_url}/schema/openapi.json", timeout=20)
    assert response.status_code == 200
    return response.json()


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _kinds(doc: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    """A schema's JSON kinds: {"string"}, {"integer", "null"}, {"any"}, ..."""
    if "$ref" in schema:
        return _kinds(doc, _resolve(doc, schema))
    for union in ("oneOf", "anyOf"):
        if union in schema:
            return set().union(*(_kinds(doc, s) for s in schema[union]))
    kind = schema.get("type")
    if kind is None:
        return {"any"} if "properties" not in schema else {"object"}
    return set(kind) if isinstance(kind, list) else {kind}


def _compatible(served: set[str], mine: set[str]) -> bool:
    """The client can decode whatever the gateway may send (an int where the client allows a number, too)."""
    if "any" in mine:
        return True
    widened = mine | ({"integer"} if "number" in mine else set())
    return served <= widened


@pytest.mark.parametrize(("method", "path", "code", "pick", "mine"), OPERATIONS,
                         ids=[f"{m} {p}" for m, p, *_ in OPERATIONS])
def test_client_types_match_the_served_document(document, method, path, code, pick, mine):
    operation = document["paths"][path][method]
    envelope = _resolve(document, operation["responses"][code]["content"]["application/json"]["schema"])
    served = envelope
    if pick is not None:
        assert pick in envelope["properties"], f"the envelope has no {pick!r}"
        served = _resolve(document, envelope["properties"][pick])
        if served.get("type") == "array":
            served = _resolve(document, served["items"])
        if pick in PAGED:
            assert "count" in envelope["required"]
    (_, components) = msgspec.json.schema_components([mine], ref_template="#/components/schemas/{name}")
    own = components[mine.__name__]
    own_doc = {"components": {"schemas": components}}
    assert set(own["properties"]) == set(served["properties"]), "fields differ"
    for name, schema in served["properties"].items():
        theirs, ours = _kinds(document, schema), _kinds(own_doc, own["properties"][name])
        assert _compatible(theirs, ours), f"{name}: served {theirs}, client {ours}"
    optional_served = set(served["properties"]) - set(served.get("required", []))
    required_mine = set(own.get("required", []))
    assert not required_mine & optional_served, f"the client requires what the gateway may omit: " \
                                                f"{required_mine & optional_served}"
