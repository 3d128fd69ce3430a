"""A real SMTP server on loopback (aiosmtpd) that keeps what arrives, for tests that read the mail Weft sent."""

from __future__ import annotations

import asyncio
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
        self.delay_s = 0.0  # how long the answer to DATA takes (a slow mail server)
        self.receiving = 0  # DATA commands begun, answered or not

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.receiving += 1
        await asyncio.sleep(self.delay_s)  # the server's own loop (a thread of its own): the client waits
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
