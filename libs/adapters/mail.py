"""Outbound email, the one place that sends it: SMTP (aiosmtplib) when WEFT_SMTP_HOST is set, else .eml files
in the local sink folder (the embedded default; `make up` summarises each new one, deploy/local/mailbox.py).

Callers that may send the same message twice (a redelivered step, a notifier restarted after a crash) pass a
deterministic Message-ID in `headers`; the sink then replaces the earlier file instead of adding a second one,
and a receiving mail system can spot the duplicate. SMTP itself has no idempotency: see docs/decisions/0009.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from pathlib import Path

import aiosmtplib
import structlog

from libs.events.settings import Settings

log = structlog.get_logger()
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class MailError(Exception):
    """Sending failed. `retryable`: a later attempt may pass (connection trouble, a 4xx answer)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def key_token(key: str) -> str:
    """A key as a token safe in a Message-ID and a file name; the same key, the same token, distinct keys
    stay distinct (a hash suffix is added when characters had to be replaced)."""
    dotted = key.replace(":", ".")
    safe = _UNSAFE.sub("-", dotted)
    if safe != dotted:
        safe += "." + hashlib.sha256(key.encode()).hexdigest()[:12]
    return safe


def message_id_for(key: str) -> str:
    """A deterministic Message-ID for whatever `key` names (an idempotency key, an event id + recipient)."""
    return f"<{key_token(key)}@weft>"


def sink_path(settings: Settings, message_id: str) -> Path:
    """Where the sink keeps the message with this Message-ID (one file per id: a resend replaces it)."""
    local = message_id.strip("<>").rsplit("@", 1)[0]
    return Path(settings.mail_sink_dir) / f"{key_token(local)}.eml"


def recipients(to: str | Sequence[str]) -> list[str]:
    """Addresses from "a@x, b@y" or a list; MailError unless every one has an @ and there is at least one."""
    if not isinstance(to, str | list | tuple):
        raise MailError(f"to must be an address or a list of addresses, got {to!r}")
    items = to.split(",") if isinstance(to, str) else to
    addresses = [str(a).strip() for a in items if str(a).strip()]
    if not addresses or not all("@" in a for _, a in getaddresses(addresses)):
        raise MailError(f"to must hold at least one address with an @, got {to!r}")
    return addresses


def build_message(settings: Settings, *, to: list[str], subject: str, text: str, html: str | None,
                  headers: Mapping[str, str] | None) -> EmailMessage:
    message = EmailMessage()
    extra = dict(headers or {})
    try:
        message["From"] = extra.pop("From", settings.smtp_from)
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = extra.pop("Message-ID", None) or f"<{uuid.uuid4()}@weft>"
        for name, value in extra.items():
            message[name] = value
    except ValueError as exc:  # CR/LF in a header value: header injection
        raise MailError(f"invalid header value: {exc}") from None
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    return message


async def _send_smtp(settings: Settings, message: EmailMessage) -> None:
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_user or None,
            password=settings.smtp_password or None,
            start_tls=settings.smtp_starttls,
            timeout=settings.outbound_timeout_s,
        )
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP authentication failed: {exc}") from exc
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [e.code for e in exc.recipients]
        raise MailError(f"recipients refused: {exc}", retryable=all(400 <= c < 500 for c in codes)) from exc
    except aiosmtplib.SMTPResponseException as exc:  # 4xx is "try again later", 5xx is final
        raise MailError(f"SMTP server answered {exc.code}: {exc.message}", retryable=400 <= exc.code < 500) from exc
    except aiosmtplib.SMTPNotSupported as exc:  # e.g. STARTTLS configured but not offered: a setup problem
        raise MailError(str(exc)) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:  # connect, disconnect, timeout
        raise MailError(f"SMTP {settings.smtp_host}:{settings.smtp_port} failed: {exc}", retryable=True) from exc


def _write_sink(message: EmailMessage, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a crash leaves the old file or the whole new one, and a resend (same Message-ID,
    # same name) replaces the earlier file instead of adding a second message.
    partial = path.parent / f".{path.name}.{os.getpid()}.tmp"
    partial.write_bytes(message.as_bytes())
    os.replace(partial, path)


async def send_mail(settings: Settings, *, to: str | Sequence[str], subject: str, text: str,
                    html: str | None = None, headers: Mapping[str, str] | None = None) -> str:
    """Send one message (text, plus an HTML alternative when given); returns its Message-ID.

    `headers` may set Message-ID (deterministic ids make resends recognisable), From, and any X- header.
    Raises MailError (with `retryable`) when the message is invalid or the SMTP server refuses it.
    """
    message = build_message(settings, to=recipients(to), subject=subject, text=text, html=html, headers=headers)
    message_id = str(message["Message-ID"])
    if settings.smtp_host:
        await _send_smtp(settings, message)
        log.info("mail_sent", to=message["To"], subject=subject, message_id=message_id)
    else:
        path = sink_path(settings, message_id)
        await asyncio.to_thread(_write_sink, message, path)
        log.info("mail_written", to=message["To"], subject=subject, path=str(path.resolve()))
    return message_id
