"""Google steps acting as the run's user: gmail.search, gmail.get, gmail.send (Gmail REST API v1) and
docs.create (Docs REST API v1), through the guarded client with the user's connected account."""

from __future__ import annotations

import base64
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, urlencode

from services.executor.integrations.connected import bearer, tokens_for
from services.executor.integrations.support import check_status, decode_body, require_str, send
from services.executor.steps import StepCall, StepDeps, StepError, config_of, step

_GMAIL = "/gmail/v1/users/me"


def _headers_of(message: dict[str, Any]) -> dict[str, str]:
    headers = (message.get("payload") or {}).get("headers") or []
    return {h.get("name", "").lower(): h.get("value", "") for h in headers if isinstance(h, dict)}


def _text_of(payload: dict[str, Any]) -> str:
    """The first text/plain part of a message payload, decoded."""
    if payload.get("mimeType") == "text/plain" and (payload.get("body") or {}).get("data"):
        data = payload["body"]["data"]
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("utf-8", errors="replace")
    for part in payload.get("parts") or []:
        text = _text_of(part)
        if text:
            return text
    return ""


def _summary(message: dict[str, Any]) -> dict[str, Any]:
    h = _headers_of(message)
    return {"id": message.get("id"), "threadId": message.get("threadId"), "from": h.get("from", ""),
            "to": h.get("to", ""), "subject": h.get("subject", ""), "date": h.get("date", ""),
            "snippet": message.get("snippet", "")}


async def _get(deps: StepDeps, call: StepCall, url: str, what: str, headers: dict[str, str]) -> Any:
    response = await send(deps, call, "GET", url, what=what, headers=headers)
    check_status(response, what)
    return decode_body(response)


@step("gmail.search")
async def gmail_search(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """The messages matching config.query (newest first, at most config.max_results, default 10), each with
    from, to, subject, date and snippet."""
    config = config_of(node, context)
    query = require_str(config, "query", "gmail.search")
    limit = config.get("max_results") or 10
    if not isinstance(limit, int) or not 1 <= limit <= 50:
        raise StepError("gmail.search: config.max_results must be an integer from 1 to 50")
    tokens = await tokens_for(deps, call, "google", "gmail.search")
    base, headers = deps.settings.google_api_base_url.rstrip("/") + _GMAIL, bearer(tokens)
    listed = await _get(deps, call, f"{base}/messages?{urlencode({'q': query, 'maxResults': limit})}",
                        "gmail.search", headers)
    messages = []
    for ref in (listed.get("messages") or [])[:limit] if isinstance(listed, dict) else []:
        found = await _get(deps, call, f"{base}/messages/{quote(str(ref.get('id')), safe='')}?format=metadata",
                           "gmail.search", headers)
        messages.append(_summary(found))
    return {"query": query, "count": len(messages), "messages": messages}


@step("gmail.get")
async def gmail_get(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    config = config_of(node, context)
    message_id = require_str(config, "message_id", "gmail.get")
    tokens = await tokens_for(deps, call, "google", "gmail.get")
    url = f"{deps.settings.google_api_base_url.rstrip('/')}{_GMAIL}/messages/{quote(message_id, safe='')}?format=full"
    found = await _get(deps, call, url, "gmail.get", bearer(tokens))
    return {**_summary(found), "body": _text_of(found.get("payload") or {})}


@step("gmail.send")
async def gmail_send(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """Send from the user's Gmail: an RFC 5322 message, base64url in `raw` (Gmail's messages.send)."""
    config = config_of(node, context)
    to = config.get("to")
    recipients = [to] if isinstance(to, str) else to if isinstance(to, list) else []
    if not recipients or not all(isinstance(r, str) and "@" in r for r in recipients):
        raise StepError(f"gmail.send: config.to must be an address or a list of addresses, got {to!r}")
    subject = require_str(config, "subject", "gmail.send")
    body = config.get("body")
    message = EmailMessage()
    message["To"], message["Subject"] = ", ".join(recipients), subject
    message["X-Weft-Idempotency-Key"] = call.idempotency_key  # Gmail has no idempotency key; receivers can dedupe
    message.set_content(body if isinstance(body, str) else "" if body is None else str(body))
    tokens = await tokens_for(deps, call, "google", "gmail.send")
    raw = base64.urlsafe_b64encode(message.as_bytes()).decode("ascii")
    url = f"{deps.settings.google_api_base_url.rstrip('/')}{_GMAIL}/messages/send"
    response = await send(deps, call, "POST", url, what="gmail.send", headers=bearer(tokens), json={"raw": raw})
    check_status(response, "gmail.send")
    sent = decode_body(response)
    return {"id": sent.get("id") if isinstance(sent, dict) else None, "to": recipients, "subject": subject}


@step("docs.create")
async def docs_create(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """A new Google Doc titled config.title, with config.content inserted as its text."""
    config = config_of(node, context)
    title = require_str(config, "title", "docs.create")
    content = config.get("content")
    tokens = await tokens_for(deps, call, "google", "docs.create")
    base, headers = deps.settings.google_docs_base_url.rstrip("/") + "/v1/documents", bearer(tokens)
    response = await send(deps, call, "POST", base, what="docs.create", headers=headers, json={"title": title})
    check_status(response, "docs.create")
    created = decode_body(response)
    doc_id = created.get("documentId") if isinstance(created, dict) else None
    if not isinstance(doc_id, str):
        raise StepError("docs.create: Google's answer has no documentId")
    if content not in (None, ""):
        text = content if isinstance(content, str) else str(content)
        update = {"requests": [{"insertText": {"location": {"index": 1}, "text": text}}]}
        response = await send(deps, call, "POST", f"{base}/{quote(doc_id, safe='')}:batchUpdate", what="docs.create",
                              headers=headers, json=update)
        check_status(response, "docs.create")
    return {"documentId": doc_id, "title": title, "url": f"https://docs.google.com/document/d/{doc_id}/edit"}
