"""`email.send`: one message through libs/adapters/mail.py (SMTP when configured, else the sink folder)."""

from __future__ import annotations

import json
from typing import Any

from libs.adapters.mail import MailError, message_id_for, recipients, send_mail, sink_path
from services.executor.integrations.support import require_str
from services.executor.steps import StepCall, StepDeps, StepError, config_of, step


@step("email.send")
async def send_email(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """Send config.to/subject/body(/html); output {"to", "subject", "message_id"} (+ "sink_path").

    The Message-ID derives from the idempotency key, so a redelivered attempt is recognisable as the same
    message (and replaces its earlier file in the sink)."""
    config = config_of(node, context)
    settings = deps.settings
    subject = require_str(config, "subject", "email.send")
    body = config.get("body")
    text = body if isinstance(body, str) else ("" if body is None else json.dumps(body, indent=2, default=str))
    message_id = message_id_for(call.idempotency_key)
    try:
        to = recipients(config.get("to"))
        await send_mail(settings, to=to, subject=subject, text=text,
                        html=str(config["html"]) if config.get("html") else None,
                        headers={"Message-ID": message_id, "X-Weft-Idempotency-Key": call.idempotency_key})
    except MailError as exc:
        raise StepError(f"email.send: {exc}", retryable=exc.retryable) from exc
    output: dict[str, Any] = {"to": to, "subject": subject, "message_id": message_id}
    if not settings.smtp_host:
        output["sink_path"] = str(sink_path(settings, message_id))
    return output
