"""Contract A's history: GET /api/history, GET /api/history/{id}, POST /api/history/rerun."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from libs.security.auth import Principal
from services.gateway.assistant.workflow import Executed, render_planned
from services.gateway.assistant.common import assistant_router
from services.gateway.core import Core, assistant, feedback, workflows
from services.gateway.core import history as history_uc
from services.gateway.core.ids import parse_id
from services.gateway.errors import PlainError, accepted_response, plain_error_body, responses


class HistoryItem(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    workflow_id: str
    command: str
    status: str
    executed_at: datetime | None
    created_at: datetime


class Pagination(msgspec.Struct, kw_only=True):
    limit: int
    offset: int
    total: int
    hasMore: bool  # noqa: N815


class HistoryPage(msgspec.Struct, kw_only=True):
    history: list[HistoryItem]
    pagination: Pagination


class FeedbackView(msgspec.Struct, kw_only=True):
    resultId: str | None  # noqa: N815
    rating: str
    comment: str | None
    created_at: datetime


class WorkflowDetail(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    workflow_id: str
    command: str
    status: str
    steps: list[dict[str, Any]]
    results: list[dict[str, Any]]
    start_time: datetime | None
    end_time: datetime | None
    created_at: datetime
    feedback: list[FeedbackView]


class HistoryDetail(msgspec.Struct, kw_only=True):
    workflow: WorkflowDetail


class RerunBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    workflowId: Annotated[str, msgspec.Meta(max_length=100)]  # noqa: N815


@get("/", responses=responses(PlainError))
async def list_history(
    principal: NamedDependency[Principal], core: NamedDependency[Core],
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    offset: Annotated[int, QueryParameter(ge=0, le=10_000_000)] = 0,
    status: Annotated[str | None, QueryParameter(max_length=20)] = None,
    search: Annotated[str | None, QueryParameter(max_length=500)] = None,
    startDate: FromQuery[datetime | None] = None,  # noqa: N803 - the contract's parameter names
    endDate: FromQuery[datetime | None] = None,  # noqa: N803
) -> HistoryPage:
    """The caller's assistant commands, newest first (status: success | failed | cancelled)."""
    page = await history_uc.list_page(core, principal, limit=limit, offset=offset, status=status, search=search,
                                      start=startDate, end=endDate)
    items = [HistoryItem(id=str(e.id), user_id=e.user_id, workflow_id=str(e.workflow_id), command=e.command,
                         status=e.status, executed_at=e.executed_at, created_at=e.created_at) for e in page.entries]
    return HistoryPage(history=items, pagination=Pagination(limit=limit, offset=offset, total=page.total,
                                                            hasMore=offset + len(items) < page.total))


@get("/{entry_id:str}", responses=responses(PlainError, 403, 404))
async def history_detail(principal: NamedDependency[Principal], core: NamedDependency[Core],
                         entry_id: FromPath[str]) -> HistoryDetail:
    """One command: its steps (with their status in the latest run), results, times and feedback."""
    found = await history_uc.detail(core, principal, parse_id(entry_id, "History entry"))
    e, run = found.entry, found.run
    given = await feedback.of_workflow(core, principal, e.workflow_id)
    return HistoryDetail(workflow=WorkflowDetail(
        id=str(e.id), user_id=e.user_id, workflow_id=str(e.workflow_id), command=e.command, status=e.status,
        steps=found.steps, results=found.results, start_time=run.started_at if run else None,
        end_time=run.finished_at if run else None, created_at=e.created_at,
        feedback=[FeedbackView(resultId=f.result_id, rating=f.rating, comment=f.comment, created_at=f.created_at)
                  for f in given]))


@post("/rerun", status_code=200, responses={**responses(PlainError, 403, 404), **accepted_response()})
async def rerun(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                data: JSONBody[RerunBody]) -> Response[Executed]:
    """Plan the same command again as a new workflow (and run it, as execute does)."""
    workflow = await workflows.owned(core, principal, parse_id(data.workflowId, "Workflow", "workflowId"),
                                     "workflowId")
    entry = await history_uc.get(core, principal, workflow.id, "workflowId")
    return await assistant.plan_and_run(core, request, principal, entry.command,
                                        render_planned("Workflow rerun initiated successfully"),
                                        body=await request.body(), shape=plain_error_body)


router = assistant_router("/api/history", [list_history, history_detail, rerun])
