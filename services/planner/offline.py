"""The offline planner: with no LLM configured, map common goals onto catalogue steps deterministically."""

from __future__ import annotations

import re
from typing import Any

from libs.domain.catalog import CATALOG

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"https?://[^\s\"'<>]+")
_CHANNEL = re.compile(r"(?<![\w&])#([a-z0-9_-]{1,80})", re.I)
_DAYS = {"sunday": 0, "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6}
_AT = r"(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?"
OFFLINE_CONFIDENCE = 0.4


def _hour(hour: str, minute: str | None, meridiem: str | None) -> tuple[int, int]:
    h, m = int(hour), int(minute or 0)
    if meridiem and meridiem.lower() == "pm" and h < 12:
        h += 12
    if meridiem and meridiem.lower() == "am" and h == 12:
        h = 0
    return min(h, 23), min(m, 59)


def schedule_from_text(text: str) -> str | None:
    """A 5-field cron for phrases like "every Monday at 9am", "daily at 17:30", "every weekday", "hourly"."""
    t = text.lower()
    if re.search(r"\b(hourly|every hour)\b", t):
        return "0 * * * *"
    day = re.search(r"\bevery\s+(sunday|monday|tuesday|wednesday|thursday|friday|saturday)s?\b(?:\s+" + _AT + ")?", t)
    if day:
        h, m = _hour(day.group(2), day.group(3), day.group(4)) if day.group(2) else (9, 0)
        return f"{m} {h} * * {_DAYS[day.group(1)]}"
    weekday = re.search(r"\b(?:every\s+weekday|on\s+weekdays|each\s+weekday)\b(?:\s+" + _AT + ")?", t)
    if weekday:
        h, m = _hour(weekday.group(1), weekday.group(2), weekday.group(3)) if weekday.group(1) else (9, 0)
        return f"{m} {h} * * 1-5"
    daily = re.search(r"\b(?:every\s+day|daily|every\s+morning|each\s+day)\b(?:\s+" + _AT + ")?", t)
    if daily:
        h, m = _hour(daily.group(1), daily.group(2), daily.group(3)) if daily.group(1) else (9, 0)
        return f"{m} {h} * * *"
    if re.search(r"\b(weekly|every week)\b", t):
        return "0 9 * * 1"
    return None


def _title(goal: str) -> str:
    words = re.sub(r"[^\w\s-]", " ", _EMAIL.sub(" ", _URL.sub(" ", goal))).split()
    return " ".join(words[:6]).capitalize() or "Workflow"


def offline_plan(goal: str, allowed: set[str] | None) -> dict[str, Any]:
    """A plan in the LLM's response shape, built from keywords; steps outside `allowed` are left out."""
    t = goal.lower()
    emails, urls, channels = _EMAIL.findall(goal), _URL.findall(goal), _CHANNEL.findall(goal)
    wanted: list[tuple[str, str, dict[str, Any]]] = []
    # Sources that read the user's connected accounts come first; what follows works on their output.
    if _MAILBOX.search(t):
        query = "is:unread" if "unread" in t else "newer_than:7d"
        wanted.append(("gmail.search", f"Search Gmail for {query}", {"query": query, "max_results": 10}))
    wanted += data_source_steps(goal)
    if urls:
        method = "POST" if re.search(r"\b(post|send|submit)\b[^.]*\bto\b\s+https?://", t) else "GET"
        wanted.append(("http.request", f"{method} {urls[0]}", {"method": method, "url": urls[0], "body": None}))
    if re.search(r"summar|report|draft|write|classif|analy[sz]|translate|extract|generate", t):
        wanted.append(("agent", "Generate the requested text", {"prompt": goal}))
    if emails or re.search(r"\b(e-?mail|mail)\b", t):
        wanted.append(("email.send", f"Email {emails[0] if emails else 'the recipient'}",
                       {"to": emails[0] if emails else "${inputs.recipient}", "subject": _title(goal), "body": goal}))
    if re.search(r"\b(google\s+)?doc(ument)?s?\b", t) and re.search(r"\b(create|write|make|new)\b", t):
        wanted.append(("docs.create", "Create a Google Doc", {"title": _title(goal), "content": goal}))
    if channels or re.search(r"\b(slack|notify|alert)\b", t):
        channel = f"#{channels[0]}" if channels else "#general"
        wanted.append(("slack.post_message", f"Post to {channel}", {"channel": channel, "message": goal}))
    steps: list[dict[str, Any]] = []
    for action, description, config in wanted:
        if allowed is not None and action not in allowed:
            continue
        previous = steps[-1]["id"] if steps else None
        if previous and action in ("email.send", "slack.post_message", "docs.create"):
            key = {"email.send": "body", "slack.post_message": "message", "docs.create": "content"}[action]
            config = {**config, key: "${input}"}
        if previous and action == "agent":
            config = {"prompt": goal + "\n\nInput: ${input}"}
        steps.append({"id": f"step_{len(steps) + 1}", "action": action, "description": description,
                      "input_from": previous, "depends_on": [], "config": config})
    if not steps and (allowed is None or "transform" in allowed):
        steps.append({"id": "step_1", "action": "transform", "description": "Record the request",
                      "input_from": None, "depends_on": [], "config": {"template": {"goal": goal}}})
    return {
        "name": _title(goal),
        "description": goal[:2000],
        "confidence": offline_confidence(goal, steps),
        "schedule": schedule_from_text(goal),
        "steps": steps,
    }


# -- data sources and confidence (issue 18; kept apart from the step keywords above to ease merges) ------------

_SALES_SOURCE = re.compile(r"\b(pull|fetch|get|query|load|read)\b[^,.;]*\b(sales|opportunit\w*|salesforce|crm|deals?)\b")
_SALES_QUERY = "SELECT Id, Amount, StageName, CloseDate FROM Opportunity WHERE CloseDate = LAST_WEEK"
_CLAUSE_SPLIT = re.compile(r"[.;,:!?]+(?=\s|$)|\b(?:and|then)\b", re.I)  # not the dots of an address
_AGENT_WORDS = re.compile(r"summar|report|draft|write|classif|analy[sz]|translate|extract|generate")


_MAILBOX = re.compile(r"\b(unread|inbox|my\s+(?:\w+\s+)?e-?mails?|my\s+mail)\b")


def data_source_steps(goal: str) -> list[tuple[str, str, dict[str, Any]]]:
    """A first step that reads the data the goal names, when the catalogue has a tool for it (E's "pull the
    latest sales data" is `salesforce.query` once the connections work adds it; until then, nothing)."""
    if "salesforce.query" in CATALOG and _SALES_SOURCE.search(goal.lower()):
        return [("salesforce.query", "Query last week's opportunities", {"query": _SALES_QUERY})]
    return []


def _clause_actions(clause: str) -> set[str]:
    """The actions a clause of a goal asks for, by the same keywords offline_plan uses."""
    t = clause.lower()
    actions = set()
    if _MAILBOX.search(t):
        actions.add("gmail.search")
    if _SALES_SOURCE.search(t):
        actions.add("salesforce.query")
    if _URL.search(clause):
        actions.add("http.request")
    if _AGENT_WORDS.search(t):
        actions.add("agent")
    if _EMAIL.search(clause) or re.search(r"\b(e-?mail|mail)\b", t):
        actions.add("email.send")
    if _CHANNEL.search(clause) or re.search(r"\b(slack|notify|alert)\b", t):
        actions.add("slack.post_message")
    return actions


def offline_confidence(goal: str, steps: list[dict[str, Any]]) -> float:
    """How much of the goal the plan covers: the share of its clauses that became a step (or the schedule),
    scaled to the offline planner's ceiling, so a plan that dropped half the goal says so."""
    clauses = [c.strip() for c in _CLAUSE_SPLIT.split(goal) if c and len(c.strip()) >= 3]
    if not clauses:
        return round(OFFLINE_CONFIDENCE / 4, 2)
    planned = {step["action"] for step in steps}
    covered = sum(1 for c in clauses if _clause_actions(c) & planned or schedule_from_text(c) is not None)
    return round(max(OFFLINE_CONFIDENCE * covered / len(clauses), OFFLINE_CONFIDENCE / 4), 2)
