"""`slack.post_message`: post to a Slack incoming webhook through the guarded client."""

from __future__ import annotations

from typing import Any

from services.executor.integrations.support import check_status, require_str, send
from services.executor.steps import StepCall, StepDeps, StepError, config_of, step


@step("slack.post_message")
async def post_message(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """POST {"channel", "text"} to config.webhook_url, else the deployment's slack_webhook_url."""
    config = config_of(node, context)
    channel = require_str(config, "channel", "slack.post_message")
    message = config.get("message")
    if message is None or message == "":
        raise StepError("slack.post_message: config.message must be a non-empty string")
    text = message if isinstance(message, str) else str(message)
    webhook = config.get("webhook_url") or getattr(deps.settings, "slack_webhook_url", "")
    if not webhook:
        raise StepError("slack.post_message: no webhook: set config.webhook_url or WEFT_SLACK_WEBHOOK_URL")
    what = f"slack.post_message to {channel}"
    response = await send(deps, call, "POST", webhook, what=what, json={"channel": channel, "text": text})
    check_status(response, what)
    return {"ok": True, "status": response.status}
