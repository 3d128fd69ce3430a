"""Notifier composition root: webhooks from run events (services/notifier/webhooks.py) and the commands
that durable timers send it."""

from __future__ import annotations

from functools import partial

from litestar import Litestar

from libs.events.consumer import subscribe_commands
from libs.events.schemas.webhook import WebhookCommand
from libs.runtime.service import ServiceContext, create_service_app
from libs.events.settings import Settings, load_settings
from services.notifier import webhooks
from services.notifier.approval_emails import setup_approval_emails

SERVICE = "notifier"


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings(service=SERVICE)

    async def setup(ctx: ServiceContext) -> None:
        sender = webhooks.setup_webhooks(ctx, settings)
        setup_approval_emails(ctx, settings)  # plan and step approval emails, reminders, escalations
        # One command subscriber per service (durable "notifier-commands"); a command union grows here.
        # Several at once: one slow webhook receiver must not hold up the others.
        subscribe_commands(
            ctx.broker, service=SERVICE, settings=settings, store=ctx.store, nc=ctx.nc,
            command_type=WebhookCommand, handle=partial(webhooks.handle_command, sender),
            max_workers=settings.webhook_workers,
        )

    return create_service_app(settings, name=SERVICE, setup=setup)
