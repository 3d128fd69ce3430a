"""A real SMTP server on loopback (aiosmtpd) that keeps what arrives, for tests that read the mail Weft sent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from deploy.local.embedded import free_port


class Inbox:
    """An aiosmtpd handler that keeps what arrives; `answer` scripts the reply to DATA (e.g. "451 busy")."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Any] = []
        self.answer = "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.answer.startswith("250"):
            self.envelopes.append(envelope)
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return self.answer


@contextmanager
def smtp_server() -> Iterator[tuple[Controller, Inbox]]:
    """Starts a server on a free loopback port; yields (controller, inbox); stops it on exit."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()
