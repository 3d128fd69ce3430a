"""The workflows read model."""

from __future__ import annotations

import asyncpg
import msgspec

from libs.events.errors import DomainError
from libs.readmodels.approvals import consume_token
from libs.events.schemas.registry import event_of
from libs.events.schemas.plan import PlanApprovalRequested, PlanApproved, PlanGenerated, PlanRevised
from libs.events.schemas.workflow import WorkflowCreated, WorkflowDeleted, WorkflowUpdated
from libs.events.store import RecordedEvent

_COLUMNS = ("name", "description", "definition", "version", "status")


async def project(conn: asyncpg.Connection, rec: RecordedEvent) -> None:
    try:
        await _apply(conn, rec)
    except asyncpg.UniqueViolationError as exc:
        # workflows_tenant_name: the name is taken within the tenant. Raising aborts the append.
        name = getattr(event_of(rec), "name", "")
        raise DomainError(409, f"A workflow named {name!r} already exists", "name") from exc


async def _apply(conn: asyncpg.Connection, rec: RecordedEvent) -> None:
    match event_of(rec):
        case WorkflowCreated() as e:
            await conn.execute(
                "INSERT INTO workflows (id, tenant_id, name, description, definition, version, status,"
                " created_by, created_at, updated_at, stream_version, goal, schedule, source)"
                " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $9, $10, $11, $12, $13)",
                e.workflow_id,
                rec.tenant_id,
                e.name,
                e.description,
                msgspec.json.encode(e.definition).decode(),
                e.version,
                e.status,
                e.created_by,
                e.at,
                rec.version,
                e.goal,
                e.schedule,
                e.source,
            )
        case PlanGenerated() as e:
            await conn.execute(
                "UPDATE workflows SET plan_version = $2, plan_hash = $3, stream_version = $4 WHERE id = $1",
                e.workflow_id, e.plan_version, e.plan_hash, rec.version,
            )
        case PlanRevised() as e:
            await conn.execute(
                "UPDATE workflows SET definition = $2::jsonb, plan_version = $3, plan_hash = $4, updated_at = $5,"
                " stream_version = $6 WHERE id = $1",
                e.workflow_id, msgspec.json.encode(e.definition).decode(), e.plan_version, e.plan_hash, e.at,
                rec.version,
            )
        case PlanApprovalRequested() as e:
            await conn.execute("UPDATE workflows SET stream_version = $2 WHERE id = $1", e.workflow_id, rec.version)
        case PlanApproved() as e:
            if e.token_id is not None:
                await consume_token(conn, rec, e.token_id, "plan")
            await conn.execute("UPDATE workflows SET status = 'active', updated_at = $2, stream_version = $3"
                               " WHERE id = $1", e.workflow_id, e.at, rec.version)
        case WorkflowUpdated() as e:
            sets, args = ["updated_at = $2", "stream_version = $3"], [e.workflow_id, e.at, rec.version]
            for column in _COLUMNS:
                value = getattr(e, column)
                if value is msgspec.UNSET:
                    continue
                if column == "definition":
                    value = msgspec.json.encode(value).decode()
                args.append(value)
                cast = "::jsonb" if column == "definition" else ""
                sets.append(f"{column} = ${len(args)}{cast}")
            await conn.execute(f"UPDATE workflows SET {', '.join(sets)} WHERE id = $1", *args)  # noqa: S608
        case WorkflowDeleted() as e:
            # The contract's DELETE cascades to execution history: the read models drop the runs too
            # (their events stay in the log).
            await conn.execute("DELETE FROM runs WHERE workflow_id = $1", e.workflow_id)
            await conn.execute("DELETE FROM workflows WHERE id = $1", e.workflow_id)
