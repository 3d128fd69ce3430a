"""The step catalogue is the one definition of step types: the executor registers exactly its types, the
planner's strict schema and the definition schema derive from the same entries, and create/update
validation refuses what the catalogue does not describe, naming the node and the field."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from libs.domain.catalog import CATALOG, PLAN_ACTIONS, step_type
from libs.domain.definition import validate_definition
from libs.events.errors import DomainError
from services.executor import integrations  # noqa: F401 - registers every step type the executor implements
from services.executor.steps import REGISTRY
from services.planner.offline import offline_plan
from services.planner.validation import plan_schema, to_definition, validate_plan


def refused(definition) -> DomainError:
    with pytest.raises(DomainError) as info:
        validate_definition(definition)
    assert info.value.status == 400
    return info.value


def one(node: dict) -> dict:
    return {"nodes": [node]}


# --- one catalogue, one registry -----------------------------------------------------------------------


def test_the_executor_registers_exactly_the_catalogue_types_both_ways():
    # Other test modules register `test.*` types into the same process-wide registry: count only the
    # executor's own.
    implemented = {name for name, fn in REGISTRY.items() if fn.__module__.startswith("services.executor.")}
    assert implemented - set(CATALOG) == set(), "registered but not in the catalogue"
    assert set(CATALOG) - implemented == set(), "in the catalogue but not implemented"


def test_plan_schemas_are_strict_and_name_only_definition_keys():
    for action in PLAN_ACTIONS:
        entry = CATALOG[action]
        schema = entry.plan_schema
        assert schema["additionalProperties"] is False and schema["required"] == list(schema["properties"])
        assert set(schema["properties"]) <= set(entry.config), action
    assert set(PLAN_ACTIONS) == {a for a, e in CATALOG.items() if e.plannable}
    jsonschema.Draft202012Validator.check_schema(plan_schema())


@pytest.mark.parametrize("goal", [
    "Every Monday at 9am summarise sales and email team@example.com",
    "POST the daily numbers to https://example.com/hook and notify #ops",
    "Record that the nightly build passed",
])
def test_plans_the_planner_accepts_are_definitions_validation_accepts(goal):
    plan = offline_plan(goal, None)
    assert validate_plan(plan, None) == []
    validate_definition(to_definition(plan))


def test_step_type_reads_integrations_by_action_and_the_rest_by_type():
    assert step_type({"type": "integration", "action": "email.send"}).action == "email.send"
    assert step_type({"type": "condition", "action": "check_status"}).action == "condition"
    assert step_type({"type": "email.send"}) is None  # an integration spelled as a type
    assert step_type({"type": "integration", "action": "agent"}) is None


# --- what validation accepts ---------------------------------------------------------------------------


E_CREATE_EXAMPLE = {  # ../shared/spec/E-workflows-api-v2.md, POST /api/v2/workflows
    "nodes": [
        {"id": "step_1", "type": "condition", "action": "check_status",
         "config": {"field": "$.deployment.status", "operator": "equals", "value": "success"}},
        {"id": "step_2", "type": "integration", "action": "slack.post_message", "input_from": "step_1",
         "config": {"channel": "#deployments", "message": "Deployment completed successfully!"}},
    ],
    "inputs": {}, "outputs": {},
}


def test_the_spec_create_example_and_the_readme_walkthrough_validate():
    assert [n["id"] for n in validate_definition(E_CREATE_EXAMPLE)] == ["step_1", "step_2"]
    validate_definition({"nodes": [
        {"id": "step_1", "type": "transform", "config": {"template": {"greeting": "Hello ${inputs.name}"}}},
        {"id": "step_2", "type": "echo", "input_from": "step_1"},
    ]})


def test_optional_keys_may_be_left_out_and_templates_stand_for_computed_values():
    validate_definition({"nodes": [
        {"id": "wait", "type": "delay", "config": {"seconds": "${inputs.wait_s}"}},
        {"id": "review", "type": "approval", "input_from": "wait", "config": {
            "title": "Check ${inputs.name}", "rows": "${inputs.rows}", "display_fields": ["name"],
            "allow_bulk_approval": False, "require_comment": True, "approvers": ["a@x.io", "b@x.io"],
            "required_approvals": 2, "timeout_s": 3600, "on_timeout": "escalate", "escalate_to": "boss@x.io",
            "escalation_timeout_s": 600, "remind_before_s": [1800, 600]}},
        {"id": "bare", "type": "approval"},
        {"id": "each", "type": "for_each", "config": {
            "items": "${inputs.people}",
            "step": {"type": "integration", "action": "email.send",
                     "config": {"to": "${item.email}", "subject": "Hi ${item.name}"}}}},
    ]})


# --- what it refuses, and how it says so ---------------------------------------------------------------


def test_an_unknown_action_names_the_node_and_the_field():
    error = refused({"nodes": [
        {"id": "a", "type": "echo"}, {"id": "b", "type": "echo"},
        {"id": "send", "type": "integration", "action": "email.sned", "config": {"to": "x@y.z", "subject": "s"}},
    ]})
    assert error.message == 'definition.nodes[2] (id "send"): unknown action "email.sned"'
    assert error.field == "definition.nodes[2].action"


@pytest.mark.parametrize("node, field, words", [
    ({"id": "n", "type": "nope"}, "definition.nodes[0].type", 'unknown step type "nope"'),
    ({"id": "n", "type": "integration"}, "definition.nodes[0].action", "needs an action"),
    ({"id": "n", "type": "email.send", "config": {"to": "a@b.c", "subject": "s"}}, "definition.nodes[0].type",
     '"type": "integration"'),
    ({"id": "n", "type": "integration", "action": "agent", "config": {"prompt": "x"}}, "definition.nodes[0].action",
     'unknown action "agent"'),
    ({"id": "n", "type": "delay", "config": {"seconds": -1}}, "definition.nodes[0].config.seconds", "minimum"),
    ({"id": "n", "type": "delay"}, "definition.nodes[0].config.seconds", "required"),
    ({"id": "n", "type": "integration", "action": "email.send", "config": {"to": "a@b.c"}},
     "definition.nodes[0].config.subject", "required"),
    ({"id": "n", "type": "integration", "action": "email.send", "config": {"to": "a@b.c", "subject": "s", "cc": "x"}},
     "definition.nodes[0].config.cc", "not a setting of email.send"),
    ({"id": "n", "type": "approval", "config": {"on_timeout": "explode"}}, "definition.nodes[0].config.on_timeout",
     "'explode' is not one of"),
    ({"id": "n", "type": "approval", "config": {"required_approvals": True}},
     "definition.nodes[0].config.required_approvals", "not of type 'integer'"),
    ({"id": "n", "type": "condition", "config": {"field": "$.a", "operator": "${inputs.op}"}},
     "definition.nodes[0].config.operator", "is not one of"),  # the executor does not resolve operators
    ({"id": "n", "type": "for_each", "config": {"items": [], "step": {"type": "nope"}}},
     "definition.nodes[0].config.step.type", 'unknown step type "nope"'),
    ({"id": "n", "type": "for_each", "config": {"items": [], "step": {"type": "delay", "config": {"seconds": 1}}}},
     "definition.nodes[0].config.step.type", "cannot run once per row"),
])
def test_a_node_the_catalogue_does_not_describe_is_refused(node, field, words):
    error = refused({"nodes": [node]})
    assert error.field == field and words in error.message and 'nodes[0] (id "n")' in error.message


@pytest.mark.parametrize("definition, field", [
    (one({"id": "n", "type": "echo", "config": {"message": "a\u0000b"}}), "definition.nodes[0].config.message"),
    (one({"id": "n", "type": "transform", "config": {"template": {"k\u0000": 1}}}),
     "definition.nodes[0].config.template.k\\u0000"),
    (one({"id": "n\u0000", "type": "echo"}), "definition.nodes[0].id"),
    (one({"id": "n", "type": "echo", "description": ["ok", "\u0000"]}), "definition.nodes[0].description[1]"),
    ({"nodes": [], "inputs": {"x": {"default": "\u0000"}}}, "definition.inputs.x.default"),
])
def test_text_postgres_cannot_store_is_refused_naming_the_field(definition, field):
    error = refused(definition)
    assert error.field == field and "NUL" in error.message


def test_a_deeply_nested_value_is_checked_without_recursion():
    deep: dict = {"v": "\u0000"}
    for _ in range(5000):
        deep = {"d": deep}
    assert refused(one({"id": "n", "type": "transform", "config": {"template": deep}})).field.endswith(".v")


def test_validation_leaves_the_definition_as_it_was():
    definition = copy.deepcopy(E_CREATE_EXAMPLE)
    validate_definition(definition)
    assert definition == E_CREATE_EXAMPLE


def test_the_published_definition_schema_agrees_with_validation():
    # definition_schema is the JSON-schema form of what validate_definition checks per config (for docs and
    # clients); both read the same ConfigKey entries.
    def agrees(node: dict) -> bool:
        entry = step_type(node)
        schema_ok = jsonschema.Draft202012Validator(entry.definition_schema).is_valid(node.get("config") or {})
        try:
            validate_definition(one(node))
            return schema_ok
        except DomainError:
            return not schema_ok

    nodes = [
        {"id": "n", "type": "delay", "config": {"seconds": "${inputs.s}"}},
        {"id": "n", "type": "delay", "config": {"seconds": -1}},
        {"id": "n", "type": "delay"},
        {"id": "n", "type": "approval", "config": {"on_timeout": "explode"}},
        {"id": "n", "type": "approval", "config": {"rows": "${input.list}", "remind_before_s": [10, 20]}},
        {"id": "n", "type": "integration", "action": "email.send", "config": {"to": ["a@b.c"], "subject": "s"}},
        {"id": "n", "type": "integration", "action": "email.send", "config": {"to": "a@b.c", "subject": "s", "cc": 1}},
        {"id": "n", "type": "transform", "config": {"anything": {"goes": True}}},
        {"id": "n", "type": "condition", "config": {"field": "$.a", "operator": "${inputs.op}"}},
    ]
    assert [node for node in nodes if not agrees(node)] == []


def test_a_plan_with_text_postgres_cannot_store_is_a_defect_naming_where():
    plan = offline_plan("Record that the nightly build passed", None)
    plan["name"] = "Nightly\u0000"
    assert validate_plan(plan, None) == ["plan.name contains a NUL character (\\u0000), which cannot be stored"]
    plan = offline_plan("Record that the nightly build passed", None)
    plan["steps"][0]["description"] = "\u0000"
    assert [d.split(" contains")[0] for d in validate_plan(plan, None)] == ["plan.steps[0].description"]


def test_addresses_are_checked_where_they_are_literal():
    approval = {"id": "n", "type": "approval", "config": {"approvers": ["a@x.io", "${inputs.boss}"]}}
    validate_definition(one(approval))
    approval["config"]["approvers"] = ["a@x.io", "bob"]
    assert refused(one(approval)).field == "definition.nodes[0].config.approvers"
    send = {"id": "n", "type": "integration", "action": "email.send", "config": {"to": "team", "subject": "s"}}
    assert refused(one(send)).field == "definition.nodes[0].config.to"
