"""v2 agent definitions (contract C's agent task needs one): create, list, get, patch, delete at /api/v2/agents.

The auth secret goes in and never comes out: answers say only `has_secret` (decision 0101).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Router, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from libs.security.auth import Principal
from services.gateway.auth import authenticate
from services.gateway.core import Core, agents
from services.gateway.core.errors import ApiError
from services.gateway.errors import EXCEPTION_HANDLERS_V2, V2Error, responses
from services.gateway.timestamps import iso
from services.gateway.shapes import Message, envelope

UNSET: Any = msgspec.UNSET
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Endpoint = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Timeout = Annotated[float, msgspec.Meta(gt=0, le=600)]
Template = Annotated[str, msgspec.Meta(max_length=10000)]


class CreateAgentBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    endpoint: Endpoint
    secret: Secret | None = None  # sent as `Authorization: Bearer <secret>` to the endpoint
    timeout_s: Timeout = 30.0
    prompt_template: Template | None = None


class PatchAgentBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name | msgspec.UnsetType = UNSET
    endpoint: Endpoint | msgspec.UnsetType = UNSET
    secret: Secret | None | msgspec.UnsetType = UNSET  # null removes it
    timeout_s: Timeout | msgspec.UnsetType = UNSET
    prompt_template: Template | None | msgspec.UnsetType = UNSET


class AgentBody(msgspec.Struct, kw_only=True):
    id: str
    name: str
    endpoint: str
    timeout_s: float
    prompt_template: str | None
    has_secret: bool
    created_at: str | None
    updated_at: str | None


AgentEnvelope = envelope("AgentEnvelope", __name__, agent=AgentBody)
AgentList = envelope("AgentList", __name__, agents=list[AgentBody], count=int)


def _body(agent: agents.Agent) -> AgentBody:
    return AgentBody(id=str(agent.id), name=agent.name, endpoint=agent.endpoint, timeout_s=agent.timeout_s,
                     prompt_template=agent.prompt_template, has_secret=agent.has_secret,
                     created_at=iso(agent.created_at), updated_at=iso(agent.updated_at))


def _check_name(name: str) -> None:
    if not name.strip() or not name.isprintable():
        raise ApiError(400, "name must be 1-100 printable characters, not only spaces", "name")


@post("/", status_code=201, responses=responses(V2Error, 409, 429, 503))
async def create_agent(principal: NamedDependency[Principal], core: NamedDependency[Core],
                       data: JSONBody[CreateAgentBody]) -> AgentEnvelope:
    _check_name(data.name)
    agent = await agents.create(core, principal, name=data.name, endpoint=data.endpoint, secret=data.secret,
                                timeout_s=data.timeout_s, prompt_template=data.prompt_template)
    return AgentEnvelope(success=True, agent=_body(agent))


@get("/", responses=responses(V2Error, 429))
async def list_agents(principal: NamedDependency[Principal], core: NamedDependency[Core],
                      limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
                      offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0) -> AgentList:
    found, total = await agents.list_page(core, principal, limit=limit, offset=offset)
    return AgentList(success=True, agents=[_body(a) for a in found], count=total)


@get("/{agent_id:uuid}", responses=responses(V2Error, 404, 429))
async def get_agent(principal: NamedDependency[Principal], core: NamedDependency[Core],
                    agent_id: FromPath[uuid.UUID]) -> AgentEnvelope:
    return AgentEnvelope(success=True, agent=_body(await agents.get(core, principal, agent_id)))


@patch("/{agent_id:uuid}", responses=responses(V2Error, 404, 409, 429, 503))
async def patch_agent(principal: NamedDependency[Principal], core: NamedDependency[Core], agent_id: FromPath[uuid.UUID],
                      data: JSONBody[PatchAgentBody]) -> AgentEnvelope:
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not UNSET}
    if "name" in changes:
        _check_name(changes["name"])
    for required in ("name", "endpoint", "timeout_s"):
        if required in changes and changes[required] is None:
            raise ApiError(400, f"{required} cannot be null", required)
    return AgentEnvelope(success=True, agent=_body(await agents.update(core, principal, agent_id, changes)))


@delete("/{agent_id:uuid}", status_code=200, responses=responses(V2Error, 404, 429))
async def delete_agent(principal: NamedDependency[Principal], core: NamedDependency[Core],
                       agent_id: FromPath[uuid.UUID]) -> Message:
    await agents.delete(core, principal, agent_id)
    return Message(success=True, message="Agent deleted")


router = Router(
    path="/api/v2/agents",
    route_handlers=[create_agent, list_agents, get_agent, patch_agent, delete_agent],
    dependencies={"principal": Provide(authenticate)},
    exception_handlers=EXCEPTION_HANDLERS_V2,
    tags=["v2: agents"],
    security=[{"bearerAuth": []}],
)
