"""Server-sent events, with no I/O: a line parser and the resumption state of a run's event stream.

The gateway gives every run event an `id` (its global position) and, on a reconnect carrying
`Last-Event-ID: N`, sends exactly the events after N (services/gateway/streams.py). The client keeps the id of
the last event it handed out and reconnects with it, so a dropped connection loses nothing and repeats nothing.
An event is handed out only once its blank line arrived: a connection cut mid-event yields nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from weft_client.types import RunEvent

_json = msgspec.json.Decoder()


@dataclass
class SseMessage:
    event: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class SseParser:
    """Feed it lines (without their line ending); it returns each complete message (the WHATWG rules we use:
    `event`, `data` (joined by newlines), `id`, comments ignored, dispatch on a blank line). `comments` keeps
    the last comment seen, so a caller can tell a server-requested reconnect (": reconnect ...")."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None
    last_comment: str | None = None

    def line(self, line: str) -> SseMessage | None:
        if line == "":
            if not self._data and self._id is None and not self._event:
                return None
            message = SseMessage(event=self._event or "message", data="\n".join(self._data), id=self._id)
            self._event, self._data, self._id = "", [], None
            return message
        if line.startswith(":"):
            self.last_comment = line[1:].strip()
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def run_event(message: SseMessage) -> RunEvent | None:
    """A stream message as a RunEvent; None for messages without an id (`connected`)."""
    if message.id is None or not message.id.isdigit():
        return None
    body: dict[str, Any] = _json.decode(message.data) if message.data else {}
    return RunEvent(id=int(message.id), type=str(body.get("type") or message.event), step_id=body.get("stepId"),
                    event_type=body.get("eventType"), data=body.get("data") or {})


@dataclass
class Resumption:
    """Where a run's stream stands: the last id handed out, whether the run is over, and reconnect accounting."""

    last_id: int | None = None
    finished: bool = False
    reconnects: int = 0

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        return headers

    def accept(self, event: RunEvent) -> bool:
        """Whether to hand the event out. Ids only grow; one at or below the last is a repeat (the gateway
        should never send one after a resume, and this makes sure the caller never sees one)."""
        if self.last_id is not None and event.id <= self.last_id:
            return False
        self.last_id = event.id
        if event.type == "workflow_complete":
            self.finished = True
        return True
