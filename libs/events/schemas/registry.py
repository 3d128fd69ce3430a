"""Decoders per stream category, built once at import and reused."""

from __future__ import annotations

import msgspec

from libs.events.schemas.base import CommandRejected, Event
from libs.events.schemas.plan import PlanStreamEvent
from libs.events.schemas.run import RunEvent
from libs.events.schemas.schedule import ScheduleEvent
from libs.events.schemas.workflow import WorkflowEvent

_DECODERS: dict[str, msgspec.json.Decoder] = {
    "workflow": msgspec.json.Decoder(WorkflowEvent),
    "run": msgspec.json.Decoder(RunEvent),
    "command": msgspec.json.Decoder(CommandRejected),
    "plan": msgspec.json.Decoder(PlanStreamEvent),
    "schedule": msgspec.json.Decoder(ScheduleEvent),
}


def decode_event(stream_id: str, data: bytes) -> Event:
    category = stream_id.split("-", 1)[0]
    try:
        decoder = _DECODERS[category]
    except KeyError:
        raise ValueError(f"no event schema for stream category {category!r}") from None
    return decoder.decode(data)


def event_of(recorded) -> Event:
    """The decoded event of a RecordedEvent, reusing the writer's object when present."""
    return recorded.event if recorded.event is not None else decode_event(recorded.stream_id, recorded.data)
