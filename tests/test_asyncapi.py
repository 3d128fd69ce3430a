"""The AsyncAPI event catalogue: every Struct of libs/events/schemas is in it, it validates against the AsyncAPI
3.0.0 JSON schema (vendored from the @asyncapi/specs package, Apache-2.0: tests/schemas/), real messages
validate against their channel's payload schema, and the gateway serves it."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import pkgutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jsonschema
import msgspec
import pytest

import libs.events.schemas as schemas_pkg
from libs.events.asyncapi import asyncapi_document
from libs.events.schemas import Command, CommandEnvelope, Event
from libs.events.schemas.run import RunStarted, StartRun

ASYNCAPI_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "asyncapi-3.0.0.json").read_text())


def document() -> dict:
    return json.loads(json.dumps(asyncapi_document()))


def structs() -> list[type]:
    found = []
    for info in pkgutil.iter_modules(schemas_pkg.__path__):
        module = importlib.import_module(f"{schemas_pkg.__name__}.{info.name}")
        found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, msgspec.Struct) and obj.__module__ == module.__name__]
    return sorted(set(found), key=lambda t: t.__name__)


def test_every_struct_of_the_schemas_is_in_the_catalogue():
    doc = document()
    components, messages = doc["components"]["schemas"], doc["components"]["messages"]
    assert len(structs()) > 60
    # CommandEnvelope appears once per command, as CommandEnvelope_<Command>_; Event and Command are the
    # tagged bases, never sent as themselves.
    generic = {"CommandEnvelope", "Event", "Command"}
    missing = [t.__name__ for t in structs() if t.__name__ not in components and t.__name__ not in generic]
    assert missing == []
    concrete = [t for t in structs() if t not in (Event, Command) and issubclass(t, Event | Command)]
    assert [t.__name__ for t in concrete if t.__name__ not in messages] == []
    for t in concrete:
        if issubclass(t, Command):
            assert f"CommandEnvelope_{t.__name__}_" in components


def test_the_catalogue_is_a_valid_asyncapi_3_document():
    validator = jsonschema.Draft7Validator(ASYNCAPI_SCHEMA)
    assert list(validator.iter_errors(document())) == []
    # The validator is really checking: a 2.x-style operation is refused.
    broken = copy.deepcopy(document())
    broken["operations"]["sendStartRun"]["action"] = "publish"
    assert list(validator.iter_errors(broken)) != []


def _payload_schema(doc: dict, message: str) -> dict:
    return {**doc["components"]["messages"][message]["payload"], "components": doc["components"]}


@pytest.mark.parametrize("message, payload", [
    ("RunStarted", RunStarted(run_id=uuid.uuid4(), at=datetime.now(UTC))),
    ("StartRun", CommandEnvelope(command_id=uuid.uuid4(), tenant_id="acme", actor="alice", correlation_id="c",
                                 issued_at=datetime.now(UTC), command=StartRun(
                                     run_id=uuid.uuid4(), workflow_id=uuid.uuid4(), workflow_version=1,
                                     definition={"nodes": []}, inputs={}, created_by="alice",
                                     at=datetime.now(UTC)))),
])
def test_messages_as_services_encode_them_match_their_payload_schema(message, payload):
    doc = document()
    schema = _payload_schema(doc, message)
    jsonschema.validate(json.loads(msgspec.json.encode(payload)), schema)
    wrong = json.loads(msgspec.json.encode(payload))
    (wrong["command"] if "command" in wrong else wrong)["run_id"] = 42
    with pytest.raises(jsonschema.ValidationError):  # and the schema is strict enough to notice a wrong type
        jsonschema.validate(wrong, schema)


def test_subjects_follow_the_design():
    channels = document()["channels"]
    assert channels["cmd.executor.StartRun"]["address"] == "weft.cmd.executor.{tenant}.StartRun"
    assert channels["evt.run.RunCompleted"]["address"] == "weft.evt.{tenant}.run.{stream_uuid}.RunCompleted"


async def test_the_gateway_serves_it_beside_the_openapi_document(stack):
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        served = await client.get("/schema/asyncapi.json")
        openapi = await client.get("/schema/openapi.json")
    assert served.status_code == 200 and served.headers["content-type"].startswith("application/json")
    assert served.json() == document()
    assert openapi.status_code == 200
