"""Run operations every surface shares: inputs checked against the definition, StartRun, the folded view."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from libs.domain import inputs as inputs_rule
from libs.events.errors import DomainError
from libs.domain.run_view import RunView, fold_run
from libs.events.schemas import Outcome
from libs.events.schemas.run import StartRun
from libs.events.store import EventStore
from services.gateway.commands import entity_id, now
from services.gateway.errors import ApiError

ACTIVE_STATUSES = ("pending", "running", "awaiting_approval")
TERMINAL_STATUSES = ("completed", "failed", "cancelled")


def prepare_inputs(definition: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Defaults applied and inputs validated against definition.inputs (libs/domain/inputs.py); a violation
    is a 400 naming the field."""
    try:
        return inputs_rule.prepare_inputs(definition, inputs)
    except DomainError as exc:
        raise ApiError(exc.status, exc.message, exc.field) from None


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
