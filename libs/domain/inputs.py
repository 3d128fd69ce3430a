"""Run inputs checked against a definition's input schema, defaults applied: one rule for every way a run
starts (the HTTP surfaces, and the scheduler when a schedule fires)."""

from __future__ import annotations

import copy
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry
from referencing.exceptions import Unresolvable

from libs.events.errors import DomainError


def _field(path: list[Any]) -> str:
    return "inputs" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _describe(error: ValidationError) -> tuple[str, str]:
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next((name for name in error.validator_value if name not in error.instance), None)
        if missing is not None:
            field = _field([*path, missing])
            return f"{field} is required", field
    field = _field(path)
    return f"{field}: {error.message}", field


def prepare_inputs(definition: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Fill in the `default`s of missing top-level properties, then validate against definition.inputs
    (JSON Schema 2020-12) when it declares properties. A violation is DomainError(400) naming the field."""
    schema = definition.get("inputs")
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return inputs
    filled = dict(inputs)
    for name, prop in schema["properties"].items():
        if name not in filled and isinstance(prop, dict) and "default" in prop:
            filled[name] = copy.deepcopy(prop["default"])
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise DomainError(400, f"definition.inputs is not a valid JSON Schema: {exc.message}",
                          "definition.inputs") from None
    # An empty registry: a `$ref` to a URL must never make us fetch it (SSRF), it just fails.
    validator = Draft202012Validator(schema, registry=Registry())
    try:
        error = best_match(validator.iter_errors(filled))
    except Unresolvable as exc:  # the definition's fault, not a 500
        raise DomainError(400, f"definition.inputs cannot be applied: {exc}", "definition.inputs") from None
    if error is not None:
        message, field = _describe(error)
        raise DomainError(400, message, field)
    return filled
