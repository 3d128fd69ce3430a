"""An assistant command whose plan waited for approval runs once the plan is approved.

The assistant (spec A) plans and runs in one request; a plan that sends data outside Weft waits as a draft
for plan approval instead. When its PlanApproved event arrives here, the run the user asked for starts. The
StartRun goes out as a timer due now (a transactional outbox, like a schedule's occurrence), so it is
published until the executor's outcome is recorded; its ids derive from (workflow, plan version), so a
redelivered PlanApproved starts one run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import msgspec
import structlog

from libs.domain.inputs import prepare_inputs
from libs.events.errors import DomainError
from libs.events.schemas import CommandEnvelope
from libs.events.schemas.run import StartRun
from libs.events.store import EventStore
from libs.events.timers import Timer, set_timers, timer_id_for

log = structlog.get_logger()


def approved_run_id(workflow_id: uuid.UUID, plan_version: int) -> uuid.UUID:
    """The run an approved assistant plan starts: one per (workflow, approved plan version)."""
    return uuid.uuid5(workflow_id, f"assistant-approved-plan-{plan_version}")


async def start_approved_run(store: EventStore, tenant_id: str, workflow_id: uuid.UUID, plan_version: int, *,
                             now: datetime, wake: Callable[[], None]) -> uuid.UUID | None:
    """Set the timer that starts the approved assistant workflow's run; None when there is nothing to start."""
    async with store.tenant_transaction(tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT status, source, definition::text AS definition, stream_version, created_by FROM workflows"
            " WHERE tenant_id = $1 AND id = $2", tenant_id, workflow_id)
        if row is None or row["source"] != "assistant" or row["status"] != "active":
            return None
        definition = msgspec.json.decode(row["definition"])
        try:
            inputs = prepare_inputs(definition, {})
        except DomainError as exc:  # a plan with required inputs cannot start unattended; the user runs it
            log.warning("approved_assistant_run_needs_inputs", workflow_id=str(workflow_id), error=exc.message)
            return None
        run_id = approved_run_id(workflow_id, plan_version)
        command = StartRun(run_id=run_id, workflow_id=workflow_id, workflow_version=row["stream_version"],
                           definition=definition, inputs=inputs, created_by=row["created_by"], at=now,
                           description="Started when its plan was approved")
        envelope = CommandEnvelope(command_id=uuid.uuid5(run_id, "start"), tenant_id=tenant_id,
                                   actor=row["created_by"], correlation_id=str(workflow_id), command=command,
                                   issued_at=now)
        await set_timers(conn, tenant_id, [Timer(timer_id=timer_id_for("assistant-run", workflow_id, plan_version),
                                                 due_at=now, service="executor", envelope=envelope)])
    wake()
    log.info("approved_assistant_run_set", workflow_id=str(workflow_id), run_id=str(run_id))
    return run_id
