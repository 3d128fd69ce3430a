"""`condition`: compare a field with a value; the engine skips what depends on a failed condition."""

from __future__ import annotations

import re
from typing import Any

from services.executor.interpolation import MissingPath, interpolate
from services.executor.steps import StepCall, StepDeps, StepError, step

OPERATORS = ("equals", "not_equals", "contains", "gt", "lt", "exists")
_WHOLE_TEMPLATE = re.compile(r"\$\{([^}]+)\}")
_MISSING = object()


def _get(context: Any, path: str) -> Any:
    """The value at a dotted path, or _MISSING (for `exists`, a missing field is an answer, not an error)."""
    try:
        return interpolate("${" + path + "}", context)
    except MissingPath:
        return _MISSING


def resolve_field(field: Any, context: dict[str, Any]) -> Any:
    """The field's value, or _MISSING. `${path}` reads the context; `$.path` (or a bare dotted path) reads
    the step's input document first, then the context; `$` alone is the input document. A step without
    input_from (E's root condition `$.deployment.status`) has the run's inputs as its input document."""
    if not isinstance(field, str) or not field.strip():
        raise StepError(f"condition: config.field must be a path such as $.status or ${{inputs.status}}, got {field!r}")
    text = field.strip()
    if whole := _WHOLE_TEMPLATE.fullmatch(text):
        return _get(context, whole.group(1))
    if "${" in text:
        return interpolate(text, context)  # a composed string; a missing part is a clear error
    document = context["input"] if "input" in context else context.get("inputs", _MISSING)
    if text in ("$", "$."):
        return document
    path = text.removeprefix("$.")
    if isinstance(document, (dict, list)):
        value = _get(document, path)
        if value is not _MISSING:
            return value
    return _get(context, path)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _equals(actual: Any, expected: Any) -> bool:
    if actual == expected:
        return True
    a, b = _number(actual), _number(expected)  # "5" equals 5: form fields and JSON disagree on types
    return a is not None and b is not None and a == b


def _compare(operator: str, actual: Any, expected: Any) -> bool:
    if actual is _MISSING or actual is None:
        return False
    a, b = _number(actual), _number(expected)
    if a is not None and b is not None:
        return a > b if operator == "gt" else a < b
    if isinstance(actual, str) and isinstance(expected, str):  # ISO dates and times order as text
        return actual > expected if operator == "gt" else actual < expected
    raise StepError(f"condition: {operator} compares numbers or strings, got {actual!r} and {expected!r}")


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return str(expected) in actual
    if isinstance(actual, list):
        return any(_equals(item, expected) for item in actual)
    if isinstance(actual, dict):
        return isinstance(expected, str) and expected in actual
    return False


def evaluate(operator: str, actual: Any, expected: Any) -> bool:
    if operator == "exists":
        return actual is not _MISSING and actual is not None
    if operator == "equals":
        return actual is not _MISSING and _equals(actual, expected)
    if operator == "not_equals":
        return actual is _MISSING or not _equals(actual, expected)
    if operator == "contains":
        return actual is not _MISSING and _contains(actual, expected)
    return _compare(operator, actual, expected)


@step("condition", pure=True)
async def condition(node: dict[str, Any], context: dict[str, Any], call: StepCall | None = None,
                    deps: StepDeps | None = None) -> Any:
    """{"passed", "field", "operator", "actual"}; passed False makes the engine skip dependants."""
    config = node.get("config") or {}
    operator = config.get("operator")
    if operator not in OPERATORS:
        raise StepError(f"condition: config.operator must be one of {', '.join(OPERATORS)}, got {operator!r}")
    field = config.get("field")
    actual = resolve_field(field, context)
    expected = interpolate(config.get("value"), context)
    passed = evaluate(operator, actual, expected)
    return {"passed": passed, "field": field, "operator": operator, "actual": None if actual is _MISSING else actual}
