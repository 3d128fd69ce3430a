"""The runs read model: status, outputs and per-step node states."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from libs.events.errors import DomainError
from libs.readmodels.approvals import consume_token
from libs.events.schemas.registry import event_of
from libs.events.schemas import run as ev  # the run events this read model follows
from libs.events.store import RecordedEvent


def _json(value) -> str:
    return msgspec.json.encode(value).decode()


# A run's step states, merged per step (later events keep earlier fields: started_at survives completion).
# $2 is {step_id: fields}; one statement for every step event of a batch. $5 sets the status (RunStarted, a
# pause, the end); otherwise a decided approval (or a rejected one) lets a paused run go on once no step
# awaits one any more ($4). With $6 the run ended: outputs ($7, RunCompleted only), error ($8, the other
# ends: RunCompleted keeps it) and finished_at ($9).
_MERGED_STEPS = ("steps || coalesce((SELECT jsonb_object_agg(p.key, coalesce(steps -> p.key, '{}'::jsonb) || p.value)"
                 " FROM jsonb_each($2::jsonb) AS p), '{}'::jsonb)")
_UPDATE_STEPS = (
    f"UPDATE runs SET steps = {_MERGED_STEPS}, stream_version = $3,"
    " status = CASE WHEN $5::text IS NOT NULL THEN $5::text WHEN $4 AND status = 'awaiting_approval'"
    f" AND NOT jsonb_path_exists({_MERGED_STEPS}, '$.* ? (@.status == \"awaiting_approval\")')"
    " THEN 'running' ELSE status END,"
    " outputs = CASE WHEN $6 AND $5 = 'completed' THEN $7::jsonb ELSE outputs END,"
    " error = CASE WHEN $6 AND $5 <> 'completed' THEN $8::text ELSE error END,"
    " finished_at = CASE WHEN $6 THEN $9::timestamptz ELSE finished_at END WHERE id = $1"
)
# Run numbers count per workflow. Appends are not serialised (docs/decisions/0032), so two runs of one workflow
# may be created at once: the number comes from the workflow row's counter, whose UPDATE waits for the other
# transaction's and then re-reads the row (READ COMMITTED), so no two runs get the same number. (A max()+1 over
# runs would not wait: both would see the same max.) A run whose workflow row is gone falls back to max()+1.
_INSERT_RUN = (
    "WITH n AS (UPDATE workflows SET last_run_number = last_run_number + 1 WHERE id = $3"
    " AND NOT EXISTS (SELECT 1 FROM runs WHERE id = $1) RETURNING last_run_number)"
    " INSERT INTO runs (id, tenant_id, workflow_id, status, inputs, created_by, created_at, started_at,"
    " stream_version, run_number, exclusive, steps, outputs, error, finished_at)"
    " VALUES ($1, $2, $3, $9, $4::jsonb, $5, $6, $6, $7,"
    " coalesce((SELECT last_run_number FROM n),"
    " (SELECT coalesce(max(run_number), 0) + 1 FROM runs WHERE workflow_id = $3)), $8, $10::jsonb, $11::jsonb, $12,"
    " $13) ON CONFLICT (id) DO NOTHING RETURNING true"
)
_ACTIVE = ("pending", "running", "awaiting_approval")


class _StepPatch:
    """Changes of consecutive events of one run, written by one statement: the step states, the status and
    the end (_UPDATE_STEPS); when the run was created in the same batch, its row is inserted with all of
    them (_INSERT_RUN)."""

    def __init__(self) -> None:
        self.run_id = None
        self.fields: dict[str, dict] = {}
        self.version = 0
        self.unpause = False
        self.status: str | None = None
        self.ended = False
        self.outputs = None
        self.error: str | None = None
        self.finished_at = None
        self.created: tuple[RecordedEvent, ev.RunCreated] | None = None

    def add(self, rec: RecordedEvent, run_id, step_id: str | None, fields: dict, *, unpause: bool = False) -> None:
        self.run_id, self.version = run_id, rec.version
        if step_id is not None:
            self.fields.setdefault(step_id, {}).update(fields)
        self.unpause = self.unpause or unpause

    def end(self, rec: RecordedEvent, run_id, status: str, at, *, error: str | None = None, outputs=None) -> None:
        self.add(rec, run_id, None, {})
        self.status, self.ended, self.finished_at = status, True, at
        self.error, self.outputs = error, outputs

    def holds_other_run(self, event) -> bool:
        current = self.run_id if self.run_id is not None else self.created[1].run_id if self.created else None
        return current is not None and getattr(event, "run_id", None) != current

    async def flush(self, conn: asyncpg.Connection) -> None:
        if self.created is not None and await self._insert(conn):
            self.__init__()
            return
        if self.run_id is not None:
            await conn.execute(_UPDATE_STEPS, self.run_id, _json(self.fields), self.version, self.unpause,
                               self.status, self.ended, _json(self.outputs), self.error, self.finished_at)
        self.__init__()

    async def _insert(self, conn: asyncpg.Connection) -> bool:
        """Insert the created run; True when the row took in the changes after RunCreated too. An exclusive
        run that is already over is inserted as pending first (then updated), so the one-active-run index
        still refuses it while another run is active."""
        rec, e = self.created
        exclusive = e.definition.get("concurrency") != "unlimited"
        status = self.status or "pending"
        merged = self.run_id is not None and (not exclusive or status in _ACTIVE)
        if not merged:
            status = "pending"
        ended = merged and self.ended
        inserted = await conn.fetchval(
            _INSERT_RUN, e.run_id, rec.tenant_id, e.workflow_id, _json(e.inputs), e.created_by, e.at,
            self.version if merged else rec.version, exclusive, status,
            _json(self.fields) if merged else "{}",
            _json(self.outputs) if ended and status == "completed" else None,
            self.error if ended and status != "completed" else None,
            self.finished_at if ended else None,
        )
        # Not inserted (the row exists): the changes after RunCreated are applied as an update, as always.
        return merged and bool(inserted)


async def project(conn: asyncpg.Connection, recorded: Sequence[RecordedEvent]) -> None:
    """Apply consecutive run events in order; the changes between two events that need statements of their own
    (for one run) are merged into one statement, and a run created in the batch is inserted with them."""
    patch = _StepPatch()
    try:
        for rec in recorded:
            event = event_of(rec)
            if patch.holds_other_run(event):
                await patch.flush(conn)
            if isinstance(event, ev.RunCreated):
                patch.created = (rec, event)
            elif not _patch_step(patch, rec, event):
                await patch.flush(conn)
                await _apply(conn, rec, event)
        await patch.flush(conn)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "runs_one_active_per_workflow":
            raise
        # Raising aborts the append: the StartRun is refused, nothing is recorded but the refusal.
        raise DomainError(409, "A run of this workflow is already active; wait for it or stop it (a definition"
                          " with \"concurrency\": \"unlimited\" lets runs overlap)") from exc


def _patch_step(patch: _StepPatch, rec: RecordedEvent, event) -> bool:
    """Add a step-only event's change to the patch; False for events that are not step-only."""
    match event:
        case ev.RunStarted() as e:  # written with the steps it starts
            patch.add(rec, e.run_id, None, {})
            patch.status = "running"
        case ev.StepStarted() as e:
            patch.add(rec, e.run_id, e.step_id, {"status": "running", "attempt": e.attempt, "started_at": e.at.isoformat()})
        case ev.StepCompleted() as e:
            patch.add(rec, e.run_id, e.step_id, {"status": "completed", "attempt": e.attempt, "output": e.output,
                                                 "finished_at": e.at.isoformat()}, unpause=True)
        case ev.StepFailed() as e:
            # A rejected approval: the run is no longer paused (it fails or goes on with on_error: continue).
            patch.add(rec, e.run_id, e.step_id, {"status": "failed", "attempt": e.attempt, "error": e.error,
                                                 "finished_at": e.at.isoformat()}, unpause=True)
        case ev.StepSkipped() as e:
            patch.add(rec, e.run_id, e.step_id, {"status": "skipped", "reason": e.reason, "finished_at": e.at.isoformat()})
        case ev.StepRetryScheduled() as e:
            patch.add(rec, e.run_id, e.step_id, {"status": "retrying", "attempt": e.attempt, "error": e.error,
                                                 "retry_at": e.retry_at.isoformat()})
        case ev.StepWaiting() as e:
            patch.add(rec, e.run_id, e.step_id, {"status": "waiting", "until": e.until.isoformat()})
        case ev.RunCompleted() as e:
            patch.end(rec, e.run_id, "completed", e.at, outputs=e.outputs)
        case ev.RunFailed() as e:
            patch.end(rec, e.run_id, "failed", e.at, error=e.error)
        case ev.RunCancelled() | ev.RunTerminated() as e:
            patch.end(rec, e.run_id, "cancelled", e.at, error=e.reason or None)
        case _:
            return False
    return True


async def _apply(conn: asyncpg.Connection, rec: RecordedEvent, event) -> None:
    match event:
        case ev.StepAwaitingApproval() as e:
            patch = _StepPatch()
            patch.add(rec, e.run_id, e.step_id, {"status": "awaiting_approval", "approval": e.approval,
                                                 "paused_at": e.at.isoformat()})
            patch.status = "awaiting_approval"
            await patch.flush(conn)
        case ev.ApprovalDecisionRecorded() as e if e.token_id is not None:
            await consume_token(conn, rec, e.token_id, "step")
