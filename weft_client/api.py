"""The v2 and public API operations, written once: each method builds a Call and hands it to the transport.

On `Client` a method returns its result; on `AsyncClient` the same method returns an awaitable of it.
"""

from __future__ import annotations

from typing import Any

from weft_client._core import PUBLIC, V2, Call, resource_id
from weft_client.types import (
    ApprovalData,
    CommandState,
    Decision,
    Execution,
    ExecutionDecision,
    ExecutionResults,
    ExecutionStatus,
    Health,
    Occurrence,
    ParsedPlan,
    PendingApproval,
    Run,
    Schedule,
    Workflow,
    WorkflowSummary,
)


class V2Api:
    """Operations of /api/v2/workflows (a user's bearer token)."""

    def _do(self, call: Call) -> Any:  # provided by the transport
        raise NotImplementedError

    def _pages(self, make: Any, page_size: int) -> Any:  # provided by the transport
        raise NotImplementedError

    # ---- workflows

    def health(self) -> Health:
        """The v2 API's health (no token needed)."""
        return self._do(Call("GET", f"{V2}/health", into=Health))

    def _list_workflows(self, status: str | None, limit: int, offset: int) -> Call:
        return Call("GET", V2, {"status": status, "limit": limit, "offset": offset}, into=list[WorkflowSummary],
                    pick="workflows")

    def list_workflows(self, status: str | None = None, limit: int = 50, offset: int = 0):
        """One page of the tenant's workflows, newest first, as a Page (items, count = the total, offset)."""
        return self._do(_paged(self._list_workflows(status, limit, offset), "workflows", offset))

    def iter_workflows(self, status: str | None = None, page_size: int = 100):
        """Every workflow, fetching page after page (a generator; async: an async generator)."""
        return self._pages(lambda offset: _paged(self._list_workflows(status, page_size, offset), "workflows",
                                                 offset), page_size)

    def get_workflow(self, workflow_id: str) -> Workflow:
        """A workflow with its definition."""
        return self._do(Call("GET", f"{V2}/{workflow_id}", into=Workflow, pick="workflow"))

    def create_workflow(self, name: str, definition: dict[str, Any], *, description: str | None = None,
                        version: str | None = None, idempotency_key: str | None = None) -> Workflow:
        """Create an active workflow from a definition ({"nodes": [...]})."""
        body = _omit_none({"name": name, "definition": definition, "description": description, "version": version})
        return self._do(Call("POST", V2, body=body, into=Workflow, pick="workflow", keyed=True,
                             idempotency_key=idempotency_key, follow=self._follow_workflow))

    def update_workflow(self, workflow_id: str, *, idempotency_key: str | None = None, **changes: Any) -> Workflow:
        """Change name, description, definition, version or status (active | archived)."""
        return self._do(Call("PATCH", f"{V2}/{workflow_id}", body=changes, into=Workflow, pick="workflow",
                             keyed=True, idempotency_key=idempotency_key, follow=self._follow_workflow))

    def delete_workflow(self, workflow_id: str, *, idempotency_key: str | None = None) -> str:
        """Delete a workflow and its history; returns the gateway's message."""
        return self._do(Call("DELETE", f"{V2}/{workflow_id}", pick="message", keyed=True,
                             idempotency_key=idempotency_key, follow=lambda _: "Workflow deleted successfully"))

    def _follow_workflow(self, state: CommandState) -> Call:
        return Call("GET", f"{V2}/{resource_id(state, 'workflow')}", into=Workflow, pick="workflow")

    def workflow_schema(self, workflow_id: str) -> dict[str, Any]:
        """The definition's input and output JSON schemas: {"inputs": {...}, "outputs": {...}}."""
        return self._do(Call("GET", f"{V2}/{workflow_id}/schema", pick="schema"))

    def parse(self, instruction: str, *, available_tools: list[str] | None = None,
              idempotency_key: str | None = None) -> ParsedPlan:
        """Plan a workflow from plain language (nothing is created)."""
        body: dict[str, Any] = {"instruction": instruction}
        if available_tools is not None:
            body["context"] = {"availableTools": available_tools}
        return self._do(Call("POST", f"{V2}/parse", body=body, into=ParsedPlan, pick="workflow", keyed=True,
                             idempotency_key=idempotency_key, timeout_s=150.0))

    # ---- runs

    def execute(self, workflow_id: str, inputs: dict[str, Any] | None = None, *,
                idempotency_key: str | None = None) -> Run:
        """Start a run and return it (`.id`). A 503 or a dropped connection is retried with the same
        Idempotency-Key (one run, however many tries); a 202 is followed to the run it created."""
        return self._do(Call("POST", f"{V2}/{workflow_id}/execute", body={"inputs": inputs or {}}, into=Run,
                             pick="run", keyed=True, idempotency_key=idempotency_key,
                             follow=lambda state: self._run_call(workflow_id, resource_id(state, "run"))))

    def _list_runs(self, workflow_id: str, status: str | None, limit: int, offset: int) -> Call:
        return Call("GET", f"{V2}/{workflow_id}/runs", {"status": status, "limit": limit, "offset": offset},
                    into=list[Run], pick="runs")

    def list_runs(self, workflow_id: str, status: str | None = None, limit: int = 50, offset: int = 0):
        """One page of a workflow's runs, newest first (status: running | completed | failed | terminated)."""
        return self._do(_paged(self._list_runs(workflow_id, status, limit, offset), "runs", offset))

    def iter_runs(self, workflow_id: str, status: str | None = None, page_size: int = 100):
        """Every run of a workflow, newest first, page after page."""
        return self._pages(lambda offset: _paged(self._list_runs(workflow_id, status, page_size, offset), "runs",
                                                 offset), page_size)

    def _run_call(self, workflow_id: str, run_id: str, at_version: int | None = None) -> Call:
        return Call("GET", f"{V2}/{workflow_id}/runs/{run_id}", {"at_version": at_version}, into=Run, pick="run")

    def get_run(self, workflow_id: str, run_id: str, *, at_version: int | None = None) -> Run:
        """The run now, or as of its first `at_version` events."""
        return self._do(self._run_call(workflow_id, run_id, at_version))

    def cancel_run(self, workflow_id: str, run_id: str, *, idempotency_key: str | None = None) -> str:
        """Terminate a running run (409 once it has finished); returns the gateway's message."""
        return self._do(Call("DELETE", f"{V2}/{workflow_id}/runs/{run_id}", pick="message", keyed=True,
                             idempotency_key=idempotency_key,
                             follow=lambda _: "Workflow run terminated successfully"))

    def command(self, command_id: str) -> CommandState:
        """The outcome of a command a 202 pointed at: pending, committed or refused."""
        return self._do(Call("GET", f"{V2}/commands/{command_id}", into=CommandState, pick="command"))

    # ---- schedules

    def create_schedule(self, workflow_id: str, cron_expression: str, *, timezone: str | None = None,
                        inputs: dict[str, Any] | None = None, idempotency_key: str | None = None,
                        **options: Any) -> Schedule:
        """A cron schedule (5 fields, any IANA zone); options: missed_execution_policy, overlap_policy,
        max_queued, pause_after_failures, enabled."""
        body = _omit_none({"cron_expression": cron_expression, "timezone": timezone, "inputs": inputs, **options})
        return self._do(Call("POST", f"{V2}/{workflow_id}/schedules", body=body, into=Schedule, pick="schedule",
                             keyed=True, idempotency_key=idempotency_key,
                             follow=lambda s: self._schedule_call(workflow_id, resource_id(s, "schedule"))))

    def list_schedules(self, workflow_id: str) -> list[Schedule]:
        """A workflow's schedules."""
        return self._do(Call("GET", f"{V2}/{workflow_id}/schedules", into=list[Schedule], pick="schedules"))

    def _schedule_call(self, workflow_id: str, schedule_id: str) -> Call:
        return Call("GET", f"{V2}/{workflow_id}/schedules/{schedule_id}", into=Schedule, pick="schedule")

    def get_schedule(self, workflow_id: str, schedule_id: str) -> Schedule:
        """One schedule, with its next and last run."""
        return self._do(self._schedule_call(workflow_id, schedule_id))

    def update_schedule(self, workflow_id: str, schedule_id: str, *, idempotency_key: str | None = None,
                        **changes: Any) -> Schedule:
        """Change cron_expression, timezone, inputs, enabled or a policy."""
        return self._do(Call("PATCH", f"{V2}/{workflow_id}/schedules/{schedule_id}", body=changes, into=Schedule,
                             pick="schedule", keyed=True, idempotency_key=idempotency_key,
                             follow=lambda _: self._schedule_call(workflow_id, schedule_id)))

    def delete_schedule(self, workflow_id: str, schedule_id: str, *, idempotency_key: str | None = None) -> str:
        """Delete a schedule; returns the gateway's message."""
        return self._do(Call("DELETE", f"{V2}/{workflow_id}/schedules/{schedule_id}", pick="message", keyed=True,
                             idempotency_key=idempotency_key, follow=lambda _: "Schedule deleted successfully"))

    def occurrences(self, workflow_id: str, schedule_id: str, *, status: str | None = None, at: str | None = None,
                    limit: int = 50, offset: int = 0) -> list[Occurrence]:
        """What happened to each occurrence, newest first; `at` (ISO time) answers "why didn't it run then?"."""
        return self._do(Call("GET", f"{V2}/{workflow_id}/schedules/{schedule_id}/occurrences",
                             {"status": status, "at": at, "limit": limit, "offset": offset},
                             into=list[Occurrence], pick="occurrences"))

    # ---- approvals

    def _list_approvals(self, workflow_id: str | None, limit: int, offset: int) -> Call:
        return Call("GET", f"{V2}/approvals", {"workflow_id": workflow_id, "limit": limit, "offset": offset},
                    into=list[PendingApproval], pick="approvals")

    def list_approvals(self, workflow_id: str | None = None, limit: int = 50, offset: int = 0):
        """One page of the steps waiting for a decision (oldest run first)."""
        return self._do(_paged(self._list_approvals(workflow_id, limit, offset), "approvals", offset))

    def iter_approvals(self, workflow_id: str | None = None, page_size: int = 100):
        """Every step waiting for a decision, page after page."""
        return self._pages(lambda offset: _paged(self._list_approvals(workflow_id, page_size, offset), "approvals",
                                                 offset), page_size)

    def decide(self, workflow_id: str, run_id: str, decision: str, *, step_id: str | None = None,
               comment: str = "", idempotency_key: str | None = None) -> Decision:
        """Approve or reject a paused step as the signed-in user (one of the step's approvers)."""
        if decision not in ("approve", "reject"):
            raise ValueError("decision must be approve or reject")
        body = _omit_none({"step_id": step_id, "comment": comment or None})
        return self._do(Call("POST", f"{V2}/{workflow_id}/runs/{run_id}/{decision}", body=body, into=Decision,
                             pick="decision", keyed=True, idempotency_key=idempotency_key))


class PublicApi:
    """Operations of /api/v1/public (an API key; a key sees only the runs it started)."""

    def _do(self, call: Call) -> Any:
        raise NotImplementedError

    def execute(self, workflow_id: str, input: dict[str, Any] | None = None, *, description: str | None = None,
                idempotency_key: str | None = None) -> Execution:
        """Start an execution (202 in the contract); `.id` is its executionId. Retries keep the key."""
        body = _omit_none({"input": input or {}, "description": description})
        return self._do(Call("POST", f"{PUBLIC}/agents/{workflow_id}/execute", body=body, into=Execution,
                             keyed=True, idempotency_key=idempotency_key))

    def status(self, execution_id: str) -> ExecutionStatus:
        """Where an execution this key started stands (pending until the executor has recorded it)."""
        return self._do(Call("GET", f"{PUBLIC}/executions/{execution_id}/status", into=ExecutionStatus))

    def results(self, execution_id: str) -> ExecutionResults:
        """An execution's output (with per-row results for a for_each), once completed."""
        return self._do(Call("GET", f"{PUBLIC}/executions/{execution_id}/results", into=ExecutionResults))

    def pending_approval(self, execution_id: str) -> ApprovalData:
        """What a paused execution asks to approve (rows, metadata, display fields)."""
        return self._do(Call("GET", f"{PUBLIC}/executions/{execution_id}/pending-approval", into=ApprovalData))

    def approve(self, execution_id: str, comment: str = "") -> ExecutionDecision:
        """Approve a paused execution (final: the step resolves at once). Not retried: it takes no key."""
        return self._do(Call("POST", f"{PUBLIC}/executions/{execution_id}/approve", body={"comment": comment},
                             into=ExecutionDecision))

    def reject(self, execution_id: str, comment: str = "") -> ExecutionDecision:
        """Reject a paused execution; the run stops."""
        return self._do(Call("POST", f"{PUBLIC}/executions/{execution_id}/reject", body={"comment": comment},
                             into=ExecutionDecision))


def _omit_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _paged(call: Call, key: str, offset: int) -> Call:
    """The list call, read as a Page (items and the total count) instead of a bare list."""
    call.pick, call.page_key, call.page_offset = None, key, offset
    return call
