"""Notifier commands for webhooks: carried by durable timers (libs/events/timers.py) to the notifier."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from libs.events.schemas.base import Command


class AttemptWebhookDelivery(Command, frozen=True, kw_only=True):
    """Make attempt number `attempt` of a delivery, unless it was made already (then: nothing)."""

    delivery_id: UUID
    attempt: int


class NotifyWebhookEndpointDisabled(Command, frozen=True, kw_only=True):
    """Email the owner of an endpoint that was disabled after failing persistently."""

    endpoint_id: UUID
    disabled_at: datetime


WebhookCommand = AttemptWebhookDelivery | NotifyWebhookEndpointDisabled
