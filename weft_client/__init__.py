"""Weft's Python client: the v2 API as a user (`Client`, `AsyncClient`) and the public API with an API key
(`PublicClient`, `AsyncPublicClient`). Depends on httpx and msgspec only. Guide: docs/client.md.

    from weft_client import Client
    with Client("http://127.0.0.1:8000", token=TOKEN) as weft:
        run = weft.execute(workflow_id, inputs={"name": "Ada"}, idempotency_key="order-42")
        for event in weft.events(workflow_id, run.id):
            print(event.type, event.step_id)
"""

from weft_client.aio import AsyncClient, AsyncPublicClient
from weft_client.errors import (
    ApiError,
    BadRequest,
    CommandPending,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    TransportError,
    Unauthorized,
    Unavailable,
    WeftError,
)
from weft_client.sync import Client, PublicClient
from weft_client.types import (
    CommandState,
    Decision,
    Execution,
    ExecutionResults,
    ExecutionStatus,
    Occurrence,
    Page,
    ParsedPlan,
    PendingApproval,
    RateLimit,
    Run,
    RunEvent,
    Schedule,
    Workflow,
    WorkflowSummary,
)

__all__ = [
    "ApiError", "AsyncClient", "AsyncPublicClient", "BadRequest", "Client", "CommandPending", "CommandState",
    "Conflict", "Decision", "Execution", "ExecutionResults", "ExecutionStatus", "Forbidden", "NotFound",
    "Occurrence", "Page", "ParsedPlan", "PendingApproval", "PublicClient", "RateLimit", "RateLimited", "Run",
    "RunEvent", "Schedule", "TransportError", "Unauthorized", "Unavailable", "WeftError", "Workflow",
    "WorkflowSummary",
]
