"""The assistant contract's planner functions: parseCommand and generateWorkflowPlan, same outputs as A."""

from __future__ import annotations

import re
from typing import Any

from libs.domain.catalog import assistant_steps
from services.planner.offline import OFFLINE_CONFIDENCE, offline_plan, schedule_from_text

_INTENTS = {
    "email.send": "send_email",
    "slack.post_message": "post_message",
    "http.request": "call_api",
    "agent": "generate_text",
    "transform": "record_request",
}
# Rough seconds per step, for estimatedDuration.
_DURATION_S = {"agent": 10, "http.request": 2, "email.send": 2, "slack.post_message": 1, "approval": 0}


def parse_command(command: str) -> dict[str, Any]:
    """Intent, parameters and confidence of a command, e.g. {"intent": "send_email", "parameters":
    {"recipient": "john@example.com"}, "confidence": 0.4} (deterministic; the offline planner's reading)."""
    plan = offline_plan(command, None)
    actions = [s["action"] for s in plan["steps"]]
    primary = next((a for a in ("email.send", "slack.post_message", "http.request", "agent") if a in actions),
                   actions[0] if actions else "transform")
    parameters: dict[str, Any] = {}
    for step in plan["steps"]:
        config = step["config"]
        if step["action"] == "email.send" and "${" not in config["to"]:
            parameters["recipient"] = config["to"]
        elif step["action"] == "http.request":
            parameters["url"], parameters["method"] = config["url"], config["method"]
        elif step["action"] == "slack.post_message":
            parameters["channel"] = config["channel"]
    if schedule := schedule_from_text(command):
        parameters["schedule"] = schedule
    if emails := re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", command):
        parameters.setdefault("recipient", emails[0])
    return {"intent": _INTENTS.get(primary, primary), "parameters": parameters, "confidence": OFFLINE_CONFIDENCE}


def generate_workflow_plan(definition: dict[str, Any]) -> dict[str, Any]:
    """{"steps": [...with dependencies], "estimatedDuration": seconds} for a plan's definition."""
    total = 0
    for node in definition.get("nodes", []):
        key = node.get("action") if node.get("type") == "integration" else node.get("type")
        total += int((node.get("config") or {}).get("seconds", 0)) if key == "delay" else _DURATION_S.get(key, 1)
    return {"steps": assistant_steps(definition), "estimatedDuration": total}


__all__ = ["generate_workflow_plan", "parse_command"]
