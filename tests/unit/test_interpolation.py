"""`${path}` templates and the built-in steps: given a context, when a template is resolved, then a value or
MissingPath."""

from __future__ import annotations

import pytest

from services.executor.interpolation import MissingPath, interpolate, lookup
from services.executor.steps import REGISTRY

CONTEXT = {
    "inputs": {"n": 3, "name": "Ada", "flag": False, "obj": {"k": "v"}, "items": [{"b": "first"}, {"b": "second"}]},
    "steps": {"fetch": {"output": {"count": 10, "tags": ["x", "y"]}}},
    "a": {"b": "ab", "0": "zero-key"},
    "input": {"passed": "through"},
}


# --- whole-string templates keep the value's type ------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${inputs.n}", 3),
        ("${inputs.flag}", False),
        ("${inputs.obj}", {"k": "v"}),
        ("${steps.fetch.output.tags}", ["x", "y"]),
        ("${inputs.name}", "Ada"),
    ],
)
def test_whole_string_template_keeps_the_type(template, expected):
    result = interpolate(template, CONTEXT)
    assert result == expected and type(result) is type(expected)


def test_whole_string_template_tolerates_surrounding_spaces_inside_braces():
    assert interpolate("${ inputs.n }", CONTEXT) == 3


# --- embedded templates become text --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hello ${inputs.name}!", "Hello Ada!"),
        ("n=${inputs.n}", "n=3"),
        ("obj=${inputs.obj}", 'obj={"k":"v"}'),
        ("tags=${steps.fetch.output.tags}", 'tags=["x","y"]'),
        ("flag=${inputs.flag}", "flag=false"),
        ("${inputs.name} has ${steps.fetch.output.count}", "Ada has 10"),
    ],
)
def test_embedded_templates_become_text(template, expected):
    assert interpolate(template, CONTEXT) == expected


def test_non_templates_pass_through_unchanged():
    assert interpolate("plain $ text {x}", CONTEXT) == "plain $ text {x}"
    assert interpolate(5, CONTEXT) == 5
    assert interpolate(None, CONTEXT) is None


# --- nesting, indexes, prefix --------------------------------------------------------------------------


def test_nested_dict_and_list_templates_are_resolved_recursively():
    template = {"greeting": "Hi ${inputs.name}", "nums": ["${inputs.n}", {"deep": "${inputs.obj.k}"}], "lit": 1}
    assert interpolate(template, CONTEXT) == {"greeting": "Hi Ada", "nums": [3, {"deep": "v"}], "lit": 1}


def test_list_indexes_in_paths():
    assert interpolate("${inputs.items.0.b}", CONTEXT) == "first"
    assert interpolate("${inputs.items.1.b}", CONTEXT) == "second"
    assert lookup(CONTEXT, "steps.fetch.output.tags.1") == "y"


def test_digit_part_is_a_dict_key_when_the_value_is_a_dict():
    assert lookup(CONTEXT, "a.0") == "zero-key"


def test_dollar_dot_prefix_is_ignored():
    assert interpolate("${$.a.b}", CONTEXT) == "ab"
    assert lookup(CONTEXT, "$.inputs.n") == 3


@pytest.mark.parametrize(
    "path", ["inputs.missing", "inputs.items.5.b", "inputs.items.x", "inputs.n.deeper", "nope"]
)
def test_missing_path_raises_naming_the_path(path):
    with pytest.raises(MissingPath) as info:
        interpolate("${" + path + "}", CONTEXT)
    assert info.value.path == path
    assert path in str(info.value)


def test_missing_path_inside_embedded_text_raises_too():
    with pytest.raises(MissingPath, match="inputs.ghost"):
        interpolate("before ${inputs.name} and ${inputs.ghost}", CONTEXT)


def test_missing_path_deep_in_a_nested_template_raises():
    with pytest.raises(MissingPath, match="steps.other"):
        interpolate({"x": [{"y": "${steps.other.output}"}]}, CONTEXT)


# --- steps via REGISTRY --------------------------------------------------------------------------------


def test_registry_has_the_builtin_steps():
    assert {"transform", "echo", "noop"} <= REGISTRY.keys()
    assert REGISTRY["echo"] is REGISTRY["noop"]


async def test_transform_builds_the_value_from_config_template():
    node = {"id": "t", "type": "transform", "config": {"template": {"total": "${inputs.n}", "who": "Mr ${inputs.name}"}}}
    assert await REGISTRY["transform"](node, CONTEXT) == {"total": 3, "who": "Mr Ada"}


async def test_transform_without_template_interpolates_the_whole_config():
    node = {"id": "t", "type": "transform", "config": {"count": "${steps.fetch.output.count}"}}
    assert await REGISTRY["transform"](node, CONTEXT) == {"count": 10}


async def test_transform_propagates_missing_path():
    node = {"id": "t", "type": "transform", "config": {"template": "${inputs.ghost}"}}
    with pytest.raises(MissingPath):
        await REGISTRY["transform"](node, CONTEXT)


async def test_echo_with_message_interpolates_it():
    node = {"id": "e", "type": "echo", "config": {"message": "Hello ${inputs.name}"}}
    assert await REGISTRY["echo"](node, CONTEXT) == "Hello Ada"


async def test_echo_without_message_returns_the_input():
    assert await REGISTRY["echo"]({"id": "e", "type": "echo"}, CONTEXT) == {"passed": "through"}
    assert await REGISTRY["noop"]({"id": "n", "type": "noop", "config": {}}, {}) is None
