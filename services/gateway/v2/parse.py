"""v2 natural-language parsing: POST /parse plans a workflow without creating it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from libs.events.schemas import Outcome
from libs.events.schemas.plan import ParseInstruction
from libs.security.auth import Principal
from services.gateway.commands import entity_id, now
from services.gateway.core import Core
from services.gateway.core.errors import ApiError
from services.gateway.core.plans import plan_event
from services.gateway.errors import V2Error, accepted_response, responses
from services.gateway.v2.shapes import ParseBody


class ParsedPlan(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    name: str
    description: str
    steps: list[dict[str, Any]]
    confidence: float
    source: str
    valid: bool
    schedule: str | None
    planHash: str  # noqa: N815 - the contract's field names
    estimatedCostUsd: float  # noqa: N815
    outboundSteps: list[str]  # noqa: N815
    planner: dict[str, Any]
    message: str | None = None


class ParseResponse(msgspec.Struct, kw_only=True):
    success: bool
    workflow: ParsedPlan
    parseTimeMs: int  # noqa: N815


def plan_json(event) -> dict[str, Any]:
    """A generated plan in the v2 parse shape, plus what a reviewer needs (hash, cost, planner)."""
    body: dict[str, Any] = {
        "type": "generated",
        "name": event.name,
        "description": event.description,
        "steps": event.definition["nodes"],
        "confidence": event.confidence,
        "source": event.source,
        "valid": True,
        "schedule": event.schedule,
        "planHash": event.plan_hash,
        "estimatedCostUsd": event.est_cost_usd,
        "outboundSteps": event.outbound_steps,
        "planner": {"model": event.model, "promptVersion": event.prompt_version, "cached": event.cached,
                    "promptTokens": event.prompt_tokens, "completionTokens": event.completion_tokens},
    }
    if event.source == "offline-planner":
        body["message"] = "Planned by the offline planner (no LLM configured); confidence is low, review the steps."
    return body


@post("/parse", status_code=200, responses={**responses(V2Error, 422, 429), **accepted_response()})
async def parse_instruction(request: Request, principal: NamedDependency[Principal], core: NamedDependency[Core],
                            data: JSONBody[ParseBody]) -> Response[ParseResponse]:
    body = data
    instruction = body.instruction.strip()
    if len(instruction) < 5:
        raise ApiError(400, "instruction must be at least 5 characters", "instruction")
    started = time.perf_counter()
    tools = body.context.availableTools if body.context else None

    def make(command_id: uuid.UUID) -> ParseInstruction:
        return ParseInstruction(plan_id=entity_id(command_id), instruction=instruction, available_tools=tools,
                                organization_id=body.context.organizationId if body.context else None, at=now())

    async def render(outcome: Outcome):
        event = await plan_event(core.store, principal.tenant_id, outcome.stream_id)
        return 200, {"success": True, "workflow": plan_json(event),
                     "parseTimeMs": round((time.perf_counter() - started) * 1000)}

    return await core.dispatcher.dispatch(request, principal, "planner", make, render, await request.body(),
                                          timeout_s=core.settings.planning_timeout_s)
