"""`email.send`: SMTP when the deployment configures a host, else an .eml file in the mail sink folder."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib

from services.executor.integrations.support import require_str
from services.executor.steps import StepCall, StepDeps, StepError, config_of, step

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def key_token(idempotency_key: str) -> str:
    """The idempotency key as a token safe in a Message-ID and a file name; the same key, the same token."""
    dotted = idempotency_key.replace(":", ".")
    safe = _UNSAFE.sub("-", dotted)
    if safe != dotted:  # keep distinct keys distinct after the substitution (step ids like "each[3]")
        safe += "." + hashlib.sha256(idempotency_key.encode()).hexdigest()[:12]
    return safe


def _recipients(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise StepError(f"email.send: config.to must be an address or a list of addresses, got {value!r}")
    addresses = [str(a).strip() for a in items if str(a).strip()]
    if not addresses or not all("@" in a for a in addresses):
        raise StepError(f"email.send: config.to must hold at least one address with an @, got {value!r}")
    return addresses


def build_message(config: dict[str, Any], call: StepCall, sender: str) -> EmailMessage:
    """text (+ optional html alternative), with a Message-ID derived from the idempotency key."""
    to = _recipients(config.get("to"))
    subject = require_str(config, "subject", "email.send")
    body = config.get("body")
    text = body if isinstance(body, str) else ("" if body is None else json.dumps(body, indent=2, default=str))
    message = EmailMessage()
    try:
        message["From"] = sender
        message["To"] = ", ".join(to)
        message["Subject"] = subject
    except ValueError as exc:  # CR/LF in a header: header injection
        raise StepError(f"email.send: invalid header value: {exc}") from None
    message["Date"] = formatdate(usegmt=True)
    # A receiver (or a person) can spot a redelivered attempt by its Message-ID.
    message["Message-ID"] = f"<{key_token(call.idempotency_key)}@weft>"
    message["X-Weft-Idempotency-Key"] = call.idempotency_key
    message.set_content(text)
    if config.get("html"):
        message.add_alternative(str(config["html"]), subtype="html")
    return message


async def _send_smtp(message: EmailMessage, settings: Any) -> None:
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
        raise StepError(f"email.send: SMTP authentication failed: {exc}") from exc
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [e.code for e in exc.recipients]
        raise StepError(f"email.send: recipients refused: {exc}", retryable=all(400 <= c < 500 for c in codes)) from exc
    except aiosmtplib.SMTPResponseException as exc:  # 4xx is "try again later", 5xx is final
        raise StepError(f"email.send: SMTP server answered {exc.code}: {exc.message}",
                        retryable=400 <= exc.code < 500) from exc
    except aiosmtplib.SMTPNotSupported as exc:  # e.g. STARTTLS configured but not offered: a setup problem
        raise StepError(f"email.send: {exc}") from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:  # connect, disconnect, timeout
        raise StepError(f"email.send: SMTP {settings.smtp_host}:{settings.smtp_port} failed: {exc}",
                        retryable=True) from exc


def _write_sink(message: EmailMessage, folder: Path, token: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{token}.eml"
    # Write then rename: a crash leaves the old file or the whole new one, and a redelivered attempt (same
    # key, same name) replaces its earlier file instead of adding a second message.
    partial = folder / f".{token}.{os.getpid()}.tmp"
    partial.write_bytes(message.as_bytes())
    os.replace(partial, path)
    return path


@step("email.send")
async def send_email(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """Send config.to/subject/body(/html); output {"to", "subject", "message_id"} (+ "sink_path")."""
    config = config_of(node, context)
    settings = deps.settings
    message = build_message(config, call, settings.smtp_from)
    output: dict[str, Any] = {"to": _recipients(config.get("to")), "subject": str(message["Subject"]),
                              "message_id": str(message["Message-ID"])}
    if settings.smtp_host:
        await _send_smtp(message, settings)
    else:
        path = await asyncio.to_thread(_write_sink, message, Path(settings.mail_sink_dir), key_token(call.idempotency_key))
        output["sink_path"] = str(path)
    return output
