"""Run operations every surface shares: inputs checked against the definition, StartRun, the folded view."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry
from referencing.exceptions import Unresolvable

from libs.events.run_view import RunView, fold_run
from libs.events.schemas import Outcome
from libs.events.schemas.run import StartRun
from libs.events.store import EventStore
from services.gateway.commands import entity_id, now
from services.gateway.errors import ApiError

ACTIVE_STATUSES = ("pending", "running", "awaiting_approval")
TERMINAL_STATUSES = ("completed", "failed", "cancelled")


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
    (JSON Schema 2020-12) when it declares properties. A violation is a 400 naming the field."""
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
        raise ApiError(400, f"definition.inputs is not a valid JSON Schema: {exc.message}",
                       "definition.inputs") from None
    # An empty registry: a `$ref` to a URL must never make the gateway fetch it (SSRF), it just fails.
    validator = Draft202012Validator(schema, registry=Registry())
    try:
        error = best_match(validator.iter_errors(filled))
    except Unresolvable as exc:  # the definition's fault, not a 500
        raise ApiError(400, f"definition.inputs cannot be applied: {exc}", "definition.inputs") from None
    if error is not None:
        message, field = _describe(error)
        raise ApiError(400, message, field)
    return filled


def start_command(workflow_id: uuid.UUID, workflow_version: int, definition: dict[str, Any],
                  inputs: dict[str, Any], user_id: str) -> Callable[[uuid.UUID], StartRun]:
    """The StartRun factory Dispatcher.dispatch wants; the run id derives from the command id."""

    def make(command_id: uuid.UUID) -> StartRun:
        return StartRun(run_id=entity_id(command_id), workflow_id=workflow_id, workflow_version=workflow_version,
                        definition=definition, inputs=inputs, created_by=user_id, at=now())

    return make


def run_id_of(outcome: Outcome) -> uuid.UUID:
    return uuid.UUID(outcome.stream_id.split("-", 1)[1])


async def load_view(store: EventStore, tenant_id: str, run_id: uuid.UUID,
                    to_version: int | None = None) -> RunView | None:
    """The run folded up to `to_version` (all events when None); None when the tenant has no such run."""
    view = fold_run(await store.read_stream(tenant_id, f"run-{run_id}", to_version=to_version))
    return view if view.exists else None


async def active_runs(conn: asyncpg.Connection, tenant_id: str, workflow_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, run_number, status FROM runs WHERE tenant_id = $1 AND workflow_id = $2 AND status = ANY($3)"
        " ORDER BY run_number", tenant_id, workflow_id, list(ACTIVE_STATUSES))
