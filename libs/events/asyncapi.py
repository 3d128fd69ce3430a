"""The event catalogue as an AsyncAPI 3.0 document, generated from the msgspec Structs in libs/events/schemas
(payloads by msgspec.json.schema), so it cannot drift from what services send. The gateway serves it at
/schema/asyncapi.json; internal subscribers read it to know every subject, header and payload."""

from __future__ import annotations

import typing
from functools import cache
from typing import Any

import msgspec

from libs.events.schemas.base import CommandEnvelope, CommandRejected, Metadata, Outcome
from libs.events.schemas.plan import PlanStreamEvent
from libs.events.schemas.run import RunCommand, RunEvent
from libs.events.schemas.schedule import ScheduleCommand, ScheduleEvent
from libs.events.schemas.webhook import WebhookCommand
from libs.events.schemas.workflow import WorkflowCommand, WorkflowEvent

# Which service consumes which commands (weft.cmd.<service>.<tenant>.<Command>), and which stream category
# holds which events (weft.evt.<tenant>.<category>.<stream uuid>.<Event>). Adding a union here publishes it.
COMMANDS: dict[str, Any] = {"planner": WorkflowCommand, "executor": RunCommand, "scheduler": ScheduleCommand,
                            "notifier": WebhookCommand}
EVENTS: dict[str, Any] = {"workflow": WorkflowEvent, "plan": PlanStreamEvent, "run": RunEvent,
                          "schedule": ScheduleEvent, "command": CommandRejected}

_REF = "#/components/schemas/{name}"
_TRACE_HEADERS = {
    "traceparent": {"type": "string", "description": "W3C trace context of the sender's span, when traced"},
    "tracestate": {"type": "string", "description": "W3C trace state, when the sender has one"},
}
COMMAND_HEADERS = {"type": "object", "required": ["Nats-Msg-Id"], "properties": {
    "Nats-Msg-Id": {"type": "string", "format": "uuid", "description": "the command id (JetStream dedupe key)"},
    **_TRACE_HEADERS}}
EVENT_HEADERS = {"type": "object", "required": ["Nats-Msg-Id", "Weft-Tenant", "Weft-Stream", "Weft-Version",
                                                "Weft-Position", "Weft-Xid", "Weft-Type"], "properties": {
    "Nats-Msg-Id": {"type": "string", "format": "uuid", "description": "the event id (JetStream dedupe key)"},
    "Weft-Tenant": {"type": "string"},
    "Weft-Stream": {"type": "string", "description": "<category>-<uuid>"},
    "Weft-Version": {"type": "string", "description": "the event's 1-based version in its stream"},
    "Weft-Position": {"type": "string", "description": "the event's global position in the store"},
    "Weft-Xid": {"type": "string", "description": "the id of the transaction that stored the event; the global "
                 "order is (Weft-Xid, Weft-Position), compared as integers (docs/decisions/0032)"},
    "Weft-Type": {"type": "string", "description": "the event type (the payload's `type` tag)"},
    "Weft-Correlation-Id": {"type": "string"},
    "Weft-Causation-Id": {"type": "string"},
    **_TRACE_HEADERS}}
_TENANT = {"description": "the tenant id"}


def members(union: Any) -> list[type]:
    """The Struct types of a union alias (or a single Struct)."""
    return list(typing.get_args(union)) or [union]


def _message(name: str, ref: str, headers: dict[str, Any], summary: str | None) -> dict[str, Any]:
    message = {"name": name, "title": name, "contentType": "application/json", "headers": headers,
               "payload": {"$ref": ref}}
    if summary:
        message["summary"] = summary.strip().splitlines()[0]
    return message


@cache
def asyncapi_document() -> dict[str, Any]:
    """The whole document (built once per process: the Structs do not change while it runs)."""
    command_types = [(service, t) for service, union in COMMANDS.items() for t in members(union)]
    event_types = [(category, t) for category, union in EVENTS.items() for t in members(union)]
    # Metadata is not sent as a payload: it is stored with each event, and its ids travel as Weft-* headers.
    roots = [CommandEnvelope[t] for _, t in command_types] + [t for _, t in event_types] + [Metadata, Outcome]
    refs, schemas = msgspec.json.schema_components(roots, ref_template=_REF)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for (service, command), ref in zip(command_types, refs[:len(command_types)], strict=True):
        key = f"cmd.{service}.{command.__name__}"
        messages[command.__name__] = _message(command.__name__, ref["$ref"], COMMAND_HEADERS, command.__doc__)
        channels[key] = {"address": f"weft.cmd.{service}.{{tenant}}.{command.__name__}",
                         "title": f"{command.__name__} commands for the {service}",
                         "parameters": {"tenant": _TENANT},
                         "messages": {command.__name__: {"$ref": f"#/components/messages/{command.__name__}"}}}
        operations[f"send{command.__name__}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{_escape(key)}"},
            "summary": f"Commands are published to WEFT_COMMANDS (work queue); the {service} handles each once.",
            "messages": [{"$ref": f"#/channels/{_escape(key)}/messages/{command.__name__}"}]}
    for (category, event), ref in zip(event_types, refs[len(command_types):-2], strict=True):
        key = f"evt.{category}.{event.__name__}"
        messages[event.__name__] = _message(event.__name__, ref["$ref"], EVENT_HEADERS, event.__doc__)
        channels[key] = {"address": f"weft.evt.{{tenant}}.{category}.{{stream_uuid}}.{event.__name__}",
                         "title": f"{event.__name__} events of {category} streams",
                         "parameters": {"tenant": _TENANT, "stream_uuid": {"description": "the stream's uuid"}},
                         "messages": {event.__name__: {"$ref": f"#/components/messages/{event.__name__}"}}}
        operations[f"receive{event.__name__}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{_escape(key)}"},
            "summary": "Published by the relay to WEFT_EVENTS, in global order, once the append has committed.",
            "messages": [{"$ref": f"#/channels/{_escape(key)}/messages/{event.__name__}"}]}
    messages["Outcome"] = _message("Outcome", refs[-1]["$ref"], {"type": "object"}, Outcome.__doc__)
    channels["reply"] = {"address": "weft.reply.{tenant}.{command_id}", "title": "Command outcomes (core NATS)",
                         "parameters": {"tenant": _TENANT, "command_id": {"description": "the command's id"}},
                         "messages": {"Outcome": {"$ref": "#/components/messages/Outcome"}}}
    operations["receiveOutcome"] = {"action": "receive", "channel": {"$ref": "#/channels/reply"},
                                    "summary": "The owning service announces a command's committed outcome.",
                                    "messages": [{"$ref": "#/channels/reply/messages/Outcome"}]}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Weft commands and events", "version": "1.0.0",
                 "description": "Every command and event on NATS JetStream (DESIGN section 3). Events only gain "
                                "fields with defaults; a breaking change is a new type."},
        "defaultContentType": "application/json",
        "servers": {"nats": {"host": "localhost:4222", "protocol": "nats",
                             "description": "the deployment's NATS (WEFT_NATS_URL)"}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _escape(key: str) -> str:
    """A JSON pointer token (RFC 6901): channel keys hold no '/' or '~', so they pass as they are."""
    return key.replace("~", "~0").replace("/", "~1")
