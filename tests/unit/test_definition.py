"""validate_definition and topological_order: given a definition, then its step order or a 400 naming the
offending field."""

from __future__ import annotations

import pytest

from libs.domain.definition import MAX_NODES, dependencies, topological_order, validate_definition
from libs.events.errors import DomainError


def node(nid: str, **kw) -> dict:
    return {"id": nid, "type": "echo", **kw}


def rejected(definition, field: str = "definition") -> DomainError:
    with pytest.raises(DomainError) as info:
        validate_definition(definition, field)
    assert info.value.status == 400
    return info.value


def ids(nodes) -> list[str]:
    return [n["id"] for n in nodes]


# --- valid definitions ---------------------------------------------------------------------------------


def test_valid_definition_returns_nodes_in_topological_order():
    definition = {"nodes": [node("b", input_from="a"), node("a"), node("c", depends_on=["b"])]}
    assert ids(validate_definition(definition)) == ["a", "b", "c"]


def test_empty_node_list_is_valid():
    assert validate_definition({"nodes": []}) == []


def test_inputs_outputs_and_config_objects_are_accepted():
    definition = {"nodes": [node("a", config={"message": "hi"})], "inputs": {}, "outputs": {"x": 1}}
    assert ids(validate_definition(definition)) == ["a"]


def test_exactly_max_nodes_is_allowed():
    assert len(validate_definition({"nodes": [node(f"n{i}") for i in range(MAX_NODES)]})) == MAX_NODES


# --- each rule, with the field it names ----------------------------------------------------------------


@pytest.mark.parametrize("definition", [None, [], "nodes", 3])
def test_non_object_definition(definition):
    assert rejected(definition).field == "definition"


@pytest.mark.parametrize("definition", [{}, {"nodes": None}, {"nodes": {"a": {}}}, {"nodes": "a"}])
def test_missing_or_non_array_nodes(definition):
    assert rejected(definition).field == "definition.nodes"


def test_too_many_nodes():
    err = rejected({"nodes": [node(f"n{i}") for i in range(MAX_NODES + 1)]})
    assert err.field == "definition.nodes"
    assert str(MAX_NODES) in err.message


@pytest.mark.parametrize("key", ["inputs", "outputs"])
def test_inputs_or_outputs_not_an_object(key):
    assert rejected({"nodes": [], key: []}).field == f"definition.{key}"


@pytest.mark.parametrize("bad", [None, "a", ["a"], 1])
def test_non_object_node(bad):
    assert rejected({"nodes": [node("a"), bad]}).field == "definition.nodes[1]"


@pytest.mark.parametrize("bad", [{"type": "echo"}, {"id": "", "type": "echo"}, {"id": 7, "type": "echo"}])
def test_missing_or_bad_id(bad):
    assert rejected({"nodes": [bad]}).field == "definition.nodes[0].id"


@pytest.mark.parametrize("bad", [{"id": "a"}, {"id": "a", "type": ""}, {"id": "a", "type": None}])
def test_missing_or_bad_type(bad):
    assert rejected({"nodes": [bad]}).field == "definition.nodes[0].type"


def test_duplicate_id_names_the_second_occurrence():
    err = rejected({"nodes": [node("a"), node("b"), node("a")]})
    assert err.field == "definition.nodes[2].id"
    assert "'a'" in err.message


@pytest.mark.parametrize("config", ["x", [], 1])
def test_config_not_an_object(config):
    assert rejected({"nodes": [node("a", config=config)]}).field == "definition.nodes[0].config"


@pytest.mark.parametrize("source", [1, {"a": 1}, ["a", 2]])
def test_bad_input_from(source):
    assert rejected({"nodes": [node("a"), node("b", input_from=source)]}).field == "definition.nodes[1].input_from"


@pytest.mark.parametrize("depends", ["a", [1], {"a": 1}])
def test_bad_depends_on(depends):
    assert rejected({"nodes": [node("a"), node("b", depends_on=depends)]}).field == "definition.nodes[1].depends_on"


@pytest.mark.parametrize(
    "ref", [{"input_from": "ghost"}, {"input_from": ["a", "ghost"]}, {"depends_on": ["ghost"]}],
    ids=["input_from", "input_from-list", "depends_on"],
)
def test_unknown_reference(ref):
    err = rejected({"nodes": [node("a"), node("b", **ref)]})
    assert err.field == "definition.nodes[1]"
    assert "'ghost'" in err.message


@pytest.mark.parametrize(
    "nodes",
    [
        [node("a", depends_on=["a"])],
        [node("a", input_from="b"), node("b", input_from="a")],
        [node("ok"), node("x", depends_on=["z"]), node("y", input_from="x"), node("z", input_from=["y"])],
    ],
    ids=["self", "two", "three-after-a-root"],
)
def test_cycle(nodes):
    err = rejected({"nodes": nodes})
    assert err.field == "definition.nodes"
    assert "cycle" in err.message


def test_field_prefix_is_configurable():
    assert rejected({"nodes": [{"id": "a"}]}, field="body.definition").field == "body.definition.nodes[0].type"


def test_first_error_wins_in_declaration_order():
    err = rejected({"nodes": [{"id": "a"}, "not-an-object"]})
    assert err.field == "definition.nodes[0].type"


# --- topological_order ---------------------------------------------------------------------------------


def test_topological_order_without_dependencies_is_declaration_order():
    nodes = [node(n) for n in "dcab"]
    assert ids(topological_order(nodes)) == ["d", "c", "a", "b"]


def test_topological_order_is_stable_in_declaration_order_among_ready_steps():
    nodes = [
        node("report", input_from=["left", "right"]),
        node("right", input_from="root"),
        node("root"),
        node("left", depends_on=["root"]),
        node("side"),
    ]
    assert ids(topological_order(nodes)) == ["root", "side", "right", "left", "report"]


def test_topological_order_puts_every_step_after_its_dependencies():
    nodes = [node("e", depends_on=["d"]), node("d", input_from="c"), node("c", input_from=["a", "b"]), node("b"), node("a")]
    order = ids(topological_order(nodes))
    for n in nodes:
        assert all(order.index(dep) < order.index(n["id"]) for dep in dependencies(n))


def test_topological_order_raises_on_a_cycle():
    with pytest.raises(DomainError) as info:
        topological_order([node("a", depends_on=["b"]), node("b", depends_on=["a"])])
    assert (info.value.status, info.value.field) == (400, "definition.nodes")


def test_dependencies_merge_input_from_and_depends_on_without_duplicates():
    assert dependencies(node("x", input_from=["a", "b"], depends_on=["b", "c"])) == ["a", "b", "c"]
    assert dependencies(node("x", input_from="a")) == ["a"]
    assert dependencies(node("x")) == []
