"""Base message types shared by every context: events, commands, their envelope and outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """Something that happened. Add fields only with defaults; never rename or retype one."""


class Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """A request to change one aggregate. Ids and `at` come in with it, so deciders stay pure."""


class Metadata(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    tenant_id: str
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    command_id: str | None = None
    # W3C trace context of the span that appended the event (None unless traced); the relay puts it in the
    # NATS headers, so a trace follows an event to the services that react to it (docs/decisions/0040).
    traceparent: str | None = None


C = TypeVar("C")


class CommandEnvelope(msgspec.Struct, Generic[C], frozen=True, kw_only=True):
    """What travels on weft.cmd.*: the command plus who sent it and why."""

    command_id: UUID
    tenant_id: str
    actor: str
    correlation_id: str
    command: C  # the owning service decodes with CommandEnvelope[ItsCommandUnion]
    issued_at: datetime


class Outcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The recorded result of a command: an HTTP-like status, what it touched, and an error if refused."""

    command_id: UUID
    status: int
    stream_id: str | None = None
    version: int | None = None
    error: str | None = None
    field: str | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400


class CommandRejected(Event, frozen=True, kw_only=True):
    """A poison command, given up after MaxDeliver attempts; kept so nothing vanishes silently."""

    command_id: UUID
    subject: str
    reason: str
    deliveries: int
    at: datetime
